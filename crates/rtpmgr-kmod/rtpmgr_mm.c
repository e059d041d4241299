// SPDX-License-Identifier: GPL-2.0-only
/*
 * Charging a session's region to the configuring process's locked memory
 * (mm->locked_vm, limited by RLIMIT_MEMLOCK unless the caller has
 * CAP_IPC_LOCK), as VFIO charges pinned pages.
 *
 * Why C: the charge needs current->mm, and 7.2's Rust `current!().mm()`
 * reads it through the bindgen-generated layout of task_struct, which does
 * not match gcc's on a gcc-built kernel: bindgen lays task_struct out as
 * clang would, and on the arm64 test kernel (gcc 12, the compiler Yocto
 * builds linux-yocto with too) the bindings put `mm` at offset 992 where
 * gcc put it at 1040. The Rust version of this read another field and
 * crashed in account_locked_vm (found by the guest test
 * d4_memory_accounting). C reads the field at the compiler's own offset.
 */

#include <linux/mm.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>

#include "rtpmgr_mm.h"

int rtpmgr_pin_charge(unsigned long pages, struct mm_struct **out)
{
	struct mm_struct *mm = current->mm;
	int err;

	*out = NULL;
	/* A kernel thread has no locked memory to charge. */
	if (!mm)
		return 0;
	err = account_locked_vm(mm, pages, true);
	if (err)
		return err;
	mmgrab(mm);
	*out = mm;
	return 0;
}

void rtpmgr_pin_uncharge(struct mm_struct *mm, unsigned long pages)
{
	account_locked_vm(mm, pages, false);
	mmdrop(mm);
}
