#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Compare two locked-sigs.inc files (bitbake -S lockedsigs TARGET...): the
task signatures of a build before and after adding this repository's
layers. Every task of BEFORE must keep its signature in AFTER: a layer that
is added without its distro must change nothing (what yocto-check-layer's
test_signatures checks over world).

    sigdiff.py BEFORE AFTER
"""
import re
import sys

TASK = re.compile(r"^\s*(?P<task>[^:\s]+:[^:\s]+):(?P<hash>[0-9a-f]+)\s*\\?$")


def read(path):
    sigs = {}
    with open(path) as f:
        for line in f:
            m = TASK.match(line)
            if m:
                sigs[m["task"]] = m["hash"]
    if not sigs:
        sys.exit(f"{path}: no task signatures")
    return sigs


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    before, after = read(sys.argv[1]), read(sys.argv[2])
    changed = sorted(t for t in before if t in after and before[t] != after[t])
    gone = sorted(t for t in before if t not in after)
    for t in changed:
        print(f"changed: {t} {before[t]} -> {after[t]}")
    for t in gone:
        print(f"gone: {t}")
    if changed or gone:
        sys.exit(f"sigdiff: adding the layers changed {len(changed)} and removed {len(gone)} "
                 f"of {len(before)} task signatures")
    print(f"sigdiff: all {len(before)} task signatures unchanged by adding the layers")


if __name__ == "__main__":
    main()
