#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Checks of a configured Yocto build, with bitbake's own datastore (tinfoil).
Run inside the build environment (kas shell), in the build directory.
Several checks run in one session (one parse-cache load) when separated by
"--": qa.py graph DIR -- board 7.2 -- expect R V W.

  qa.py graph LAYERDIR...
      For every recipe of the task graph `bitbake -g` wrote (pn-buildlist)
      whose file or any of whose appends lies under one of LAYERDIR: the
      conditions oe-core's QA enforces at unpack (insane.bbclass
      do_qa_unpack) and in recipe sanity (do_recipe_qa), on the recipe as
      parsed, anonymous python and appends included. Also: no task of
      this repository's recipes may ask for the network.

  qa.py board KERNEL_SERIES
      What the board needs for the module, on the configuration as
      shipped: the preferred virtual/kernel recipe is of KERNEL_SERIES,
      turns on Rust and carries rtpmgr.cfg, fails on a dropped option
      (KMETA_AUDIT_WERROR), and rtpmgr-module is in the graph.

  qa.py expect RECIPE VAR WORD...
      RECIPE's VAR (expanded) contains each WORD (a whitespace-separated
      item, or a substring if WORD starts with '~').

  qa.py module-kernel-check
      Runs rtpmgr-module's rtpmgr_check_kernel (do_configure's prefunc)
      against kernel build directories that must pass (7.2 and 7.10 with
      CONFIG_RUST=y) and fail with a message that names the cause (6.18;
      7.2 without CONFIG_RUST).
"""
import logging
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(shutil.which("bitbake")), "..", "lib"))
import bb.tinfoil  # noqa: E402

# oe-core itself lets fetch, setscene and packaging tasks reach mirrors;
# no recipe of this repository may download while it unpacks or builds.
BUILD_TASKS = ("do_unpack", "do_patch", "do_configure", "do_compile", "do_install")
HERE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def under(path, dirs):
    path = os.path.realpath(path)
    return any(path == d or path.startswith(d + os.sep) for d in dirs)


def qa_problems(d, ours):
    """The QA conditions on one parsed recipe; ours: it is this repository's."""
    s_raw = d.getVar("S", False) or ""
    s, b = d.getVar("S"), d.getVar("B")
    workdir, unpackdir = d.getVar("WORKDIR"), d.getVar("UNPACKDIR")
    problems = []
    # do_qa_unpack
    if s_raw in ("${WORKDIR}/git", "${UNPACKDIR}/git"):
        problems.append(f"S = {s_raw} (bitbake.conf's S already is that)")
    if "${WORKDIR}" in s_raw:
        problems.append(f"S = {s_raw} is written with ${{WORKDIR}}")
    # do_recipe_qa
    if s == workdir:
        problems.append("S is WORKDIR")
    if b == workdir:
        problems.append("B is WORKDIR")
    if unpackdir == workdir:
        problems.append("UNPACKDIR is WORKDIR")
    if s.endswith("/") or b.endswith("/"):
        problems.append("S or B ends with a slash")
    # Where the sources are unpacked; a kernel's S is the shared work
    # directory (kernel.bbclass), where its do_unpack moves them.
    if bb.data.inherits_class("kernel", d):
        if s != d.getVar("STAGING_KERNEL_DIR"):
            problems.append(f"S = {s} is not STAGING_KERNEL_DIR")
    elif not (s == unpackdir or s.startswith(unpackdir + "/")):
        problems.append(f"S = {s} is not under UNPACKDIR = {unpackdir}")
    if ours:
        for task in BUILD_TASKS:
            if bb.utils.to_boolean(d.getVarFlag(task, "network")):
                problems.append(f"{task}[network] is set")
    return problems


def graph(tinfoil, layerdirs):
    dirs = [os.path.realpath(d) for d in layerdirs]
    here = [os.path.realpath(HERE)]
    with open("pn-buildlist") as f:
        pns = [line.strip() for line in f if line.strip()]
    failures, checked, self_test = [], [], []
    for pn in pns:
        fn = tinfoil.get_recipe_file(pn)
        appends = tinfoil.get_file_appends(fn)
        our_appends = [a for a in appends if under(a, here)]
        if not under(fn, dirs) and not any(under(a, dirs) for a in appends):
            continue
        d = tinfoil.parse_recipe_file(fn)
        workdir = d.getVar("WORKDIR")
        rel = os.path.relpath(fn, os.path.dirname(os.path.commonpath([fn] + dirs)))
        checked.append(f"{pn:28} S={os.path.relpath(d.getVar('S'), workdir)}")
        failures += [f"{pn} ({rel}): {p}" for p in qa_problems(d, under(fn, here))]
        # The check's own test: an upstream recipe this repository appends
        # to fix it must fail the same conditions without those appends.
        if our_appends and not under(fn, here):
            # Its task hashes differ from the cached ones, of course.
            cfg = bb.data.createCopy(tinfoil.config_data)
            cfg.setVar("BB_HASH_IGNORE_MISMATCH", "1")
            bare = tinfoil.parse_recipe_file(fn, appends=False, config_data=cfg)
            bare_problems = qa_problems(bare, False)
            if not bare_problems:
                failures.append(f"{pn}: passes without this repository's appends too; are they still needed?")
            self_test.append(f"{pn} without {', '.join(os.path.basename(a) for a in our_appends)}: "
                             + "; ".join(bare_problems))
    for line in checked:
        print("  " + line)
    for line in self_test:
        print("  self-test, fails as it should: " + line)
    if not checked:
        sys.exit("qa.py graph: no recipe of the graph comes from " + ", ".join(layerdirs))
    if failures:
        print("\n".join(failures))
        sys.exit(f"qa.py graph: {len(failures)} QA problem(s) in {len(checked)} recipes")
    print(f"qa.py graph: {len(checked)} recipes of the graph from these layers pass the unpack and sanity QA conditions")


def board(tinfoil, series):
    cfg = tinfoil.config_data
    provider = cfg.getVar("PREFERRED_PROVIDER_virtual/kernel")
    d = tinfoil.parse_recipe(provider)
    pv = d.getVar("PV")
    problems = []
    if not (pv == series or pv.startswith(series + ".") or pv.startswith(series + "+")):
        problems.append(f"virtual/kernel is {provider} {pv}, not {series}")
    if "rust" not in d.getVar("KERNEL_FEATURES").split():
        problems.append(f"{provider}: KERNEL_FEATURES lacks rust")
    if "file://rtpmgr.cfg" not in d.getVar("SRC_URI").split():
        problems.append(f"{provider}: SRC_URI lacks file://rtpmgr.cfg")
    if d.getVar("KMETA_AUDIT_WERROR") != "1":
        problems.append(f"{provider}: KMETA_AUDIT_WERROR is not 1")
    with open("pn-buildlist") as f:
        pns = f.read().split()
    for pn in ("rtpmgr-module", "rtpmgrd", "rtpmgr-config", "rtpmgr-overlays", provider):
        if pn not in pns:
            problems.append(f"{pn} is not in the image's graph")
    machine = cfg.getVar("MACHINE")
    if problems:
        sys.exit(f"qa.py board {machine}:\n  " + "\n  ".join(problems))
    print(f"qa.py board {machine}: kernel {provider} {pv} with Rust, rtpmgr.cfg and "
          "KMETA_AUDIT_WERROR; the module, daemon, config and overlays in the graph")


def expect(tinfoil, recipe, var, words):
    value = tinfoil.parse_recipe(recipe).getVar(var) or ""
    missing = [w for w in words
               if (w[1:] not in value if w.startswith("~") else w not in value.split())]
    if missing:
        sys.exit(f"qa.py expect: {recipe} {var} = {value!r} lacks {missing}")
    print(f"qa.py expect: {recipe} {var} has {' '.join(words)}")


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def module_kernel_check(tinfoil):
    d = tinfoil.parse_recipe("rtpmgr-module")
    capture = Capture()
    # The refusals are expected: keep their ERROR lines off the console,
    # where they would read as a failure; this function prints them.
    logger = logging.getLogger("BitBake")
    saved = logger.handlers[:], logger.propagate
    logger.handlers, logger.propagate = [capture], False
    cases = [
        ("7.2.8", "CONFIG_RUST=y\n", None),
        ("7.10.1", "CONFIG_MODULES=y\nCONFIG_RUST=y\n", None),
        ("6.18.33", "CONFIG_RUST=y\n", "needs Linux 7.2 or later"),
        ("7.2.8", "# CONFIG_RUST is not set\n", "without CONFIG_RUST"),
    ]
    failures = []
    for version, config, want in cases:
        with tempfile.TemporaryDirectory() as kdir:
            with open(os.path.join(kdir, "kernel-abiversion"), "w") as f:
                f.write(version + "\n")
            with open(os.path.join(kdir, ".config"), "w") as f:
                f.write(config)
            d.setVar("STAGING_KERNEL_BUILDDIR", kdir)
            d.setVar("T", os.path.join(kdir, "temp"))
            capture.messages.clear()
            try:
                bb.build.exec_func("rtpmgr_check_kernel", d)
                got = None
            except Exception:  # bb.fatal raises BBHandledException
                got = " ".join(capture.messages) or "failed without a message"
        label = f"{version} {config.strip().splitlines()[-1]}"
        if want is None and got is not None:
            failures.append(f"{label}: refused: {got}")
        elif want is not None and (got is None or want not in got):
            failures.append(f"{label}: expected an error naming {want!r}, got {got!r}")
        else:
            print(f"  {label}: {'accepted' if want is None else 'refused: ' + got}")
    logger.handlers, logger.propagate = saved
    if failures:
        sys.exit("qa.py module-kernel-check:\n  " + "\n  ".join(failures))
    print("qa.py module-kernel-check: rtpmgr_check_kernel accepts 7.2+ with Rust and names what is wrong otherwise")


def run(tinfoil, cmd, args):
    if cmd == "graph" and args:
        graph(tinfoil, args)
    elif cmd == "board" and len(args) == 1:
        board(tinfoil, args[0])
    elif cmd == "expect" and len(args) >= 3:
        expect(tinfoil, args[0], args[1], args[2:])
    elif cmd == "module-kernel-check" and not args:
        module_kernel_check(tinfoil)
    else:
        sys.exit(__doc__)


def main():
    checks, current = [], []
    for arg in sys.argv[1:] + ["--"]:
        if arg == "--":
            if current:
                checks.append(current)
            current = []
        else:
            current.append(arg)
    if not checks:
        sys.exit(__doc__)
    with bb.tinfoil.Tinfoil() as tinfoil:
        tinfoil.prepare(config_only=False, quiet=2)
        for cmd, *args in checks:
            run(tinfoil, cmd, args)


if __name__ == "__main__":
    main()
