/* SPDX-License-Identifier: GPL-2.0-only */
/* The C helper's interface, as ring.rs declares it (keep both in step). */
#ifndef RTPMGR_MM_H
#define RTPMGR_MM_H

struct mm_struct;

/*
 * Charge pages to the current task's locked memory; *out is the mm charged
 * (held with mmgrab), or NULL for a kernel thread (nothing charged).
 * -ENOMEM beyond RLIMIT_MEMLOCK without CAP_IPC_LOCK. Takes the mm's
 * mmap_lock: the caller must not hold it.
 */
int rtpmgr_pin_charge(unsigned long pages, struct mm_struct **out);
/* Undo rtpmgr_pin_charge on the mm it returned. Takes its mmap_lock. */
void rtpmgr_pin_uncharge(struct mm_struct *mm, unsigned long pages);

#endif
