/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The C helper's interface, as net.rs declares it (keep both in step).
 * Every function returns 0/a length or a negative errno.
 */
#ifndef RTPMGR_NET_H
#define RTPMGR_NET_H

#include <linux/types.h>

struct file;
struct rtpmgr_net;

/*
 * Take the UDP socket of file for a stream (the caller holds a reference on
 * file until after rtpmgr_net_detach): check that it is an AF_INET or
 * AF_INET6 UDP socket (-ENOTSOCK, -EAFNOSUPPORT, -EPROTONOSUPPORT), bound
 * if it receives (-EINVAL), connected if it sends (-EDESTADDRREQ), nobody
 * else's (-EBUSY), and install the callbacks, which call ready(ctx) (any
 * context, must not sleep). Sleeps.
 */
int rtpmgr_net_attach(struct rtpmgr_net **out, struct file *file, bool receives, bool sends,
		      void (*ready)(void *ctx), void *ctx);
/* Restore the socket's callbacks and wait for running ones. Sleeps. */
void rtpmgr_net_detach(struct rtpmgr_net *n);
/* Datagrams the socket dropped (sk_drops). Any context. */
u64 rtpmgr_net_drops(struct rtpmgr_net *n);
/* Whether a datagram waits. */
bool rtpmgr_net_rx_pending(struct rtpmgr_net *n);
/* A raw MPEG-TS datagram is whole packets of this many bytes, and the
 * first RTPMGR_TS_HEAD bytes of each are what the module judges (the
 * mpegts crate's head.rs: PACKET_LEN and HEAD_LEN, asserted in net.rs).
 */
#define RTPMGR_TS_PACKET 188
#define RTPMGR_TS_HEAD 6
/*
 * Dequeue one datagram: copy up to cap bytes to dst, up to head_cap to head
 * and its last byte to *last; if ts is not NULL and the datagram is a whole
 * number of TS packets, the first RTPMGR_TS_HEAD bytes of each packet, in
 * order, to ts (as many as ts_cap holds). Return its full length, -EAGAIN
 * when none waits, -EBADMSG for a bad checksum (dropped and counted),
 * -EFAULT when it could not be copied (dropped), or a pending socket error
 * (consumed; more datagrams may wait).
 */
long rtpmgr_net_recv(struct rtpmgr_net *n, void *dst, u32 cap, u8 *head, u32 head_cap, u8 *last,
		     u8 *ts, u32 ts_cap);
/*
 * Send one datagram without blocking, with the credentials of the socket
 * file's opener. -EAGAIN: no send buffer space, the write-space callback
 * will call ready(ctx); -EBUSY: space appeared meanwhile, retry.
 */
int rtpmgr_net_send(struct rtpmgr_net *n, const void *buf, u32 len);

#endif
