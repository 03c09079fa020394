"""Cost of the HTTP/1.1 head parser on the data path (fds/http1.py), per call.

    python benchmarks/http1.py [--n 20000] [--repeat 7]

Times framing plus parsing of the heads one 8 MiB tract request carries: the
request a tract server's data port parses, and the response our client
parses. For scale: at 1 GiB/s a tract moves every 7.8 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from fds.http1 import HeadBuffer, parse_request, parse_response

REQUEST = (b"PUT /v1/tracts/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/17?version=12&incarnation=3 HTTP/1.1\r\n"
           b"Host: 127.0.0.1:40123\r\nContent-Length: 8388608\r\n"
           b"authorization: Bearer fds1.write.1790000000.0a1b2c3d.Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE\r\n"
           b"x-request-id: 5f0c1d2e3a4b5c6d\r\n\r\n")
RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: 8388608\r\n"
            b"x-fds-checksum: 0123456789abcdef\r\nx-request-id: 5f0c1d2e3a4b5c6d\r\n\r\n")


def per_call_us(fn: Callable[[], object], n: int, repeat: int) -> float:
    """Median over ``repeat`` rounds of the mean microseconds per call."""
    rounds = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    buf = HeadBuffer(16 * 1024)

    def request() -> object:
        framed = buf.feed(REQUEST)
        assert framed is not None
        return parse_request(framed[0])

    def response() -> object:
        framed = buf.feed(RESPONSE)
        assert framed is not None
        return parse_response(framed[0])

    print(f"data port, request head: {per_call_us(request, args.n, args.repeat):.2f} us per call")
    print(f"client, response head: {per_call_us(response, args.n, args.repeat):.2f} us per call")


if __name__ == "__main__":
    main()
