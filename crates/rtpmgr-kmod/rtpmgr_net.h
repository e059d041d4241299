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
 * The owner's judge of a received datagram of len bytes: head holds its
 * first head_len bytes (at most RTPMGR_JUDGE_HEAD), last its last byte,
 * now the arrival time (CLOCK_MONOTONIC ns). True: it is what the stream
 * carries (and was accounted). Called with the helper's lock held, in
 * softirq (the fast path) or with BH disabled (rtpmgr_net_judge); must not
 * sleep. jctx is the owner's, given to rtpmgr_net_attach.
 */
typedef bool (*rtpmgr_judge_fn)(void *jctx, const u8 *head, u32 head_len, u32 len, u8 last,
				u64 now);
/* abi::RTP_CHECK_BYTES: what the RTP header check reads (asserted in net.rs). */
#define RTPMGR_JUDGE_HEAD 76

/* Counters the helper keeps with atomics (net.rs: FastCounters). */
struct rtpmgr_fast_counters {
	/* Times the data-ready callback queued the worker. */
	u64 wakeups;
	/* Receiving side: forwarded in softirq, of them with a header copy,
	 * judged malformed there, dropped after the judge (send failed).
	 */
	u64 fwd_packets, fwd_bytes, copies, malformed, fwd_drops;
	/* Sending side: sent by another socket's fast path, or failed. */
	u64 tx_packets, tx_bytes, tx_errors;
};

/*
 * Take the UDP socket of file for a stream (the caller holds a reference on
 * file until after rtpmgr_net_detach): check that it is an AF_INET or
 * AF_INET6 UDP socket (-ENOTSOCK, -EAFNOSUPPORT, -EPROTONOSUPPORT), bound
 * if it receives (-EINVAL), connected if it sends (-EDESTADDRREQ), nobody
 * else's (-EBUSY), and install the callbacks, which call ready(ctx) (any
 * context, must not sleep). With fast (a receiving stream), also the UDP
 * encapsulation hook of the fast path (idle until rtpmgr_net_fast_link).
 * judge(jctx) judges datagrams (see rtpmgr_judge_fn). Sleeps.
 */
int rtpmgr_net_attach(struct rtpmgr_net **out, struct file *file, bool receives, bool sends,
		      bool fast, void (*ready)(void *ctx), void *ctx, rtpmgr_judge_fn judge,
		      void *jctx);
/*
 * Restore the socket's callbacks and hook and wait for running ones. No
 * other stream's fast path may still link to n. Sleeps.
 */
void rtpmgr_net_detach(struct rtpmgr_net *n);
/*
 * Point n's fast path at dst (a sending stream's socket) or, with NULL,
 * stop it (datagrams take the worker path). Any context but softirq. A
 * dst unlinked here must not be detached before a grace period
 * (rtpmgr_net_detach waits for one).
 */
void rtpmgr_net_fast_link(struct rtpmgr_net *n, struct rtpmgr_net *dst);
/* Judge a datagram the worker received, under the lock the hook takes. */
bool rtpmgr_net_judge(struct rtpmgr_net *n, const u8 *head, u32 head_len, u32 len, u8 last,
		      u64 now);
/* Call f(jctx, arg) under that lock (to read the judge's state). */
void rtpmgr_net_with_judge(struct rtpmgr_net *n, void (*f)(void *jctx, void *arg), void *arg);
/* The helper's counters. Any context. */
void rtpmgr_net_fast_counters(struct rtpmgr_net *n, struct rtpmgr_fast_counters *out);
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
 * will call ready(ctx); -EBUSY: space appeared meanwhile, retry;
 * -EDESTADDRREQ: user space left the socket unconnected, unbound or
 * corked (see the function).
 */
int rtpmgr_net_send(struct rtpmgr_net *n, const void *buf, u32 len);

#endif
