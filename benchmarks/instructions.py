#!/usr/bin/env python
"""Instructions per request, counted by valgrind (callgrind): a noise-free view of part 1.

``benchmarks/run.py`` times requests on a machine whose speed moves from one
second to the next; this script counts the CPU instructions the same requests
execute, which does not move: run it twice and the figures agree to a few
parts per thousand. It drives the same variants through the same WSGI
handler (``run.Environment`` and ``run.Driver``), with per-request environs
built and signed before counting starts, and the garbage collector off while
counting (a collection would land in whichever variant happens to trigger it).

    .venv/bin/python benchmarks/instructions.py [--requests 200] [--variants a,b,...]

It re-runs itself under ``valgrind --tool=callgrind`` with instrumentation
off, then switches it on only around each variant's requests
(``callgrind_control``). Overhead = a variant's instructions per request
minus its baseline's (the POST rows over the POST baseline), as in run.py.

Read with care: instructions are not time. Memory stalls are not counted, and
under valgrind OpenSSL runs its generic code (no SHA or AES instructions), so
hashing weighs several times more here than on the hardware: the signed POST,
which hashes its 1 KiB body, is counted heavier than it runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_VARIANTS = ("none", "none_post", "ours", "ours_post", "sig_hmac", "sig_hmac_post",
                    "mtls_cached", "jwt_rs256")
UNDER_VALGRIND = "APIAUTH_INSTRUCTIONS_CHILD"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="requests counted per variant")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help="comma-separated run.py variant names (baselines are added)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args()


def child(names: list[str], n: int, out_dir: Path) -> None:
    """Under valgrind: set up, then count ``n`` requests per variant."""
    from benchmarks import run

    tmpdir = Path(tempfile.mkdtemp(prefix="apiauth-instr-"))
    env = run.Environment(tmpdir, [])
    # Work done on a clock (buffered audit rows flushed every second, the audit
    # chain sealed every 10 s, last use recorded once a minute) would land in
    # whichever variant is running when the clock strikes, and valgrind runs
    # the code ~50x slower, so it would strike far more often than on the
    # hardware. Counted without it: flushes by size only (every 50 rows), no
    # sealing, last use recorded once (before counting).
    from datetime import timedelta

    from django.test.utils import override_settings

    no_clock = override_settings(APIAUTH_AUDIT_BUFFER_SECONDS=10**6,
                                 APIAUTH_AUDIT_SEAL_INTERVAL=10**6,
                                 APIAUTH_LAST_USED_INTERVAL=timedelta(days=1))
    no_clock.enable()
    try:
        driver = run.Driver()
        pid = str(os.getpid())

        def control(*args: str) -> None:
            subprocess.run(["callgrind_control", *args, pid],  # noqa: S603,S607 (fixed arguments)
                           check=True, stdout=subprocess.DEVNULL)

        prepared = {}
        for name in names:
            base = None if name in run.SIGNED else run.base_environ(env, driver, name)
            with run._AuditSuccess(run._audit_setting(name)):
                # Warm-up: caches, compiled SQL, first-use imports.
                driver.timed_batch(env, name, driver.prepare(env, name, base, 50), [])
            prepared[name] = driver.prepare(env, name, base, n)
        run._flush_audit()
        gc.collect()
        gc.freeze()
        gc.disable()
        control("--instr=on")
        for name in names:
            with run._AuditSuccess(run._audit_setting(name)):
                control("--zero")
                failures = driver.timed_batch(env, name, prepared.pop(name), [])
                control(f"--dump={name}")
            if failures:
                raise SystemExit(f"{name}: {failures} requests did not answer 200")
        control("--instr=off")
        gc.enable()
        (out_dir / "done").write_text("ok")
    finally:
        no_clock.disable()
        env.close()
        shutil.rmtree(tmpdir, ignore_errors=True)


def totals(out_dir: Path) -> dict[str, int]:
    """Instructions of each dump, by variant name (the dump's trigger)."""
    found = {}
    for path in out_dir.glob("callgrind.out.*"):
        text = path.read_text(errors="replace")
        trigger = re.search(r"^desc: Trigger: Client Request: dump (?:--dump=)?(\S+)|"
                            r"^desc: Trigger: dump (\S+)", text, re.M)
        summary = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        if trigger and summary:
            found[trigger.group(1) or trigger.group(2)] = int(summary.group(1))
    return found


def main() -> int:
    options = parse_args()
    from benchmarks import run

    names = [v.strip() for v in options.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in run.VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants: {unknown}")
    for name in list(names):
        baseline = run.baseline_for(name, run.VARIANTS)
        if baseline not in names:
            names.insert(0, baseline)
    if os.environ.get(UNDER_VALGRIND):
        child(names, options.requests, Path(os.environ[UNDER_VALGRIND]))
        return 0
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        print("valgrind is not installed: no instruction counts (apt install valgrind)")
        return 0
    out_dir = Path(tempfile.mkdtemp(prefix="apiauth-callgrind-"))
    try:
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                   f"--callgrind-out-file={out_dir}/callgrind.out.%p",
                   sys.executable, __file__, "--requests", str(options.requests),
                   "--variants", ",".join(names)]
        print(f"counting {options.requests} requests x {len(names)} variants under callgrind"
              " (a few minutes) ...", flush=True)
        result = subprocess.run(command,  # noqa: S603 (this script, under valgrind)
                                env={**os.environ, UNDER_VALGRIND: str(out_dir)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if result.returncode or not (out_dir / "done").exists():
            sys.stderr.write(result.stderr[-4000:])
            raise SystemExit("the counted run failed")
        counts = totals(out_dir)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    n = options.requests
    per = {name: counts[name] / n for name in names if name in counts}
    missing = [name for name in names if name not in per]
    if missing:
        raise SystemExit(f"no count for {missing}")
    overhead = {name: per[name] - per[run.baseline_for(name, names)] for name in names}
    print(f"\ninstructions per request (callgrind, {n} requests per variant, GC off)\n")
    print(f"   {'variant':<16}{'instructions':>14}{'overhead':>12}")
    for name in names:
        print(f"   {name:<16}{per[name]:>14,.0f}{overhead[name]:>12,.0f}")
    ratios = {}
    for subject, peer in (("sig_hmac_post", "ours_post"), ("sig_hmac", "ours"),
                          ("mtls_cached", "ours"), ("jwt_rs256", "ours")):
        if subject in overhead and peer in overhead and overhead[peer] > 0:
            ratios[f"{subject}/{peer}"] = overhead[subject] / overhead[peer]
    if ratios:
        print("\n   overhead ratios (instructions):")
        for label, value in ratios.items():
            print(f"   {label:<28}{value:.3f}")
    if options.json:
        options.json.write_text(json.dumps({"requests": n, "per_request": per,
                                            "overhead": overhead, "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
