"""`python -m bench [NAME ...] [--scale F]`: every benchmark, or the ones named, at full or scaled size.

Each prints its figures and appends a dated row to bench/RESULTS.md."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable

import uvloop

NAMES = ("limits", "peers", "w1", "w2", "w3", "w4", "w5", "memory")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        choices=[*NAMES, []],
        metavar="NAME",
        help=f"any of {', '.join(NAMES)} (default: all)",
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every size by this (e.g. 0.1 to try the harness)"
    )
    parser.add_argument("--runs", type=int, help="runs for W1 and the peers (default 1,000)")
    parser.add_argument("--steps", type=int, default=5, help="chained steps per run (default 5)")
    parser.add_argument(
        "--topology", choices=["split", "up"], action="append", help="W1 on only this topology"
    )
    parser.add_argument(
        "--code", help="run modelruns' processes from this checkout (for before/after figures)"
    )
    parser.add_argument(
        "--peer", action="append", choices=["celery", "procrastinate", "dbos"], help="only these peers"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample W1's processes with py-spy and summarise where time goes",
    )
    return parser.parse_args(argv)


def jobs(args: argparse.Namespace) -> dict[str, Callable[[], Awaitable[object]]]:
    from bench import limits, peers, reads, runs

    def scaled(n: int, least: int = 1) -> int:
        return max(least, round(n * float(args.scale)))

    burst = args.runs or scaled(1000, 10)
    return {
        "limits": lambda: limits.all_limits(scaled(20_000, 500)),
        "peers": lambda: peers.all_peers(args.peer or ["celery", "procrastinate", "dbos"], burst, args.steps),
        "w1": lambda: runs.w1(burst, args.steps, args.topology or ["split", "up"], args.profile),
        "w2": lambda: runs.w2([10, 25, 50, 100, 200], max(2.0, 10 * args.scale), args.steps),
        "w3": lambda: reads.w3(max(1.0, 5 * args.scale)),
        "w4": lambda: reads.w4(scaled(1_000_000, 20_000)),
        "w5": lambda: runs.w5(scaled(100, 10), args.steps),
        "memory": lambda: runs.memory(scaled(10_000, 200), scaled(100_000, 2_000)),
    }


async def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.code:
        from bench import stack

        stack.CODE.append(args.code)
    table = jobs(args)
    for name in args.names or NAMES:
        await table[name]()
    return 0


if __name__ == "__main__":
    sys.exit(uvloop.run(main(sys.argv[1:])))
