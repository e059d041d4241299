#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Fill DIR with every crate the Cargo.lock files pin, named as bitbake's
crate fetcher names its downloads (NAME-VERSION.crate), from Cargo's
download cache (run `cargo fetch --locked` first): the premirror an
offline build host would have. Each file is checked against its Cargo.lock's
sha256.

    premirror.py DIR [CARGO_LOCK...]     default: the root workspace's
"""
import glob
import hashlib
import os
import shutil
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    locks = sys.argv[2:] or [os.path.join(ROOT, "Cargo.lock")]
    os.makedirs(out, exist_ok=True)
    cache = os.path.join(os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo")), "registry", "cache")
    packages = []
    for path in locks:
        with open(path, "rb") as f:
            packages += tomllib.load(f)["package"]
    count = 0
    done = set()
    for p in packages:
        if not p.get("source", "").startswith("registry+"):
            continue
        name = f"{p['name']}-{p['version']}.crate"
        if name in done:
            continue
        done.add(name)
        found = glob.glob(os.path.join(cache, "*", name))
        if not found:
            sys.exit(f"{name} is not in {cache}: run cargo fetch --locked")
        with open(found[0], "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != p["checksum"]:
                sys.exit(f"{found[0]} does not match Cargo.lock's checksum")
        shutil.copyfile(found[0], os.path.join(out, name))
        count += 1
    print(f"premirror {out}: {count} crates")


if __name__ == "__main__":
    main()
