"""A small process that starts the measured child processes and reports what each one cost.

    python bench/spawner.py        # one JSON request per line on stdin, one JSON answer per line

Why a separate process: Linux counts the address space a process had when it called exec in
its `ru_maxrss`, and a child made by fork or vfork starts out with its parent's. A benchmark
that has grown to 60 MB would report at least 60 MB for every child it starts. This process
stays at a few MB, so `ru_maxrss` from its `os.wait4` is the child's own peak.

Request: {"argv": [...], "cwd": str|null, "env": {..}|null, "input": str|null,
          "timeout": float, "kill_after": float|null}
Answer:  {"returncode", "wall", "user", "sys", "maxrss_kib", "stdout", "stderr", "killed"}
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any


def run(request: dict[str, Any]) -> dict[str, Any]:
    input_text = request.get("input")
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            request["argv"],
            cwd=request.get("cwd"),
            env=request.get("env"),
            stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            text=True,
        )
        if input_text is not None and process.stdin is not None:
            process.stdin.write(input_text)
            process.stdin.close()
        reaped = threading.Lock()
        done = False
        sent_kill = False

        def kill() -> None:
            nonlocal sent_kill
            with reaped:
                if not done:  # not reaped yet, so the pid cannot belong to anyone else
                    os.kill(process.pid, signal.SIGKILL)
                    sent_kill = True

        timers = [threading.Timer(request["timeout"], kill)]
        if request.get("kill_after") is not None:
            timers.append(threading.Timer(request["kill_after"], kill))
        for timer in timers:
            timer.start()
        try:
            os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
            with reaped:
                done = True
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            for timer in timers:
                timer.cancel()
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {
            "returncode": process.returncode,
            "wall": wall,
            "user": usage.ru_utime,
            "sys": usage.ru_stime,
            "maxrss_kib": usage.ru_maxrss,
            "stdout": out.read(),
            "stderr": err.read(),
            "killed": sent_kill and process.returncode == -signal.SIGKILL,
        }


def main() -> int:
    for line in sys.stdin:
        try:
            answer = run(json.loads(line))
        except Exception as error:  # report it to the benchmark; keep serving
            answer = {"error": f"{type(error).__name__}: {error}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
