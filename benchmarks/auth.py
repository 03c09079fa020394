"""What authentication costs per request: the check every server runs, with and without the token cache.

    python benchmarks/auth.py [--repeat 5]

Prints the median per-call cost of ``fds.auth.check`` for a token seen before (the common case: a
client reuses its token for every tract request), of a first sight (one HMAC-SHA256), and of the
header parse alone, and sets them against the time one 8 MiB tract takes on the data port here.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from fds import auth


def _per_call(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--n", type=int, default=200_000)
    args = parser.parse_args()
    secret = auth.new_secret().encode()
    auth.configure(secret=secret)
    token = auth.mint(secret, "write", 3600)
    headers = {"authorization": f"Bearer {token}", "host": "x", "content-length": "8388608"}
    fresh = [{"authorization": f"Bearer {auth.mint(secret, 'write', 3600)}"} for _ in range(args.n // 10)]
    results: dict[str, list[float]] = {"cached": [], "first sight (HMAC)": [], "parse only": []}
    for _ in range(args.repeat):
        results["cached"].append(_per_call(lambda: auth.check("PUT", "/v1/tracts/g/0", headers), args.n))
        it = iter(fresh)
        results["first sight (HMAC)"].append(
            _per_call(lambda it=it: auth.check("PUT", "/v1/tracts/g/0", next(it)), len(fresh)))  # type: ignore[misc]
        auth._verifier._cache.clear()  # type: ignore[union-attr]
        results["parse only"].append(_per_call(lambda: auth._bearer(headers), args.n))
    tract_seconds = 8 * 1024 * 1024 / (1.32 * 1024**3)  # one 8 MiB tract at the k=1 write rate in docs/benchmarks.md
    print(f"{'check':<22} {'median us':>10} {'of an 8 MiB tract':>18}")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:<22} {median * 1e6:>10.2f} {median / tract_seconds:>17.4%}")


if __name__ == "__main__":
    main()
