"""What one unary gRPC call costs in Python before any model work: a server that echoes its request bytes,
16 concurrent clients on loopback, the server's and the clients' CPU time per call, for the synchronous
server (`grpc.server` on a thread pool, what `kerasvae serve` runs) and the asyncio one (`grpc.aio.server`),
each against threaded sync clients and asyncio clients.

It bounds server-side batching (issue 23, BENCHMARKS.md "Serving: batching and start-up"): every request
still pays this floor on both sides when the model run is shared, so the throughput ratio of batched to
unbatched serving cannot pass (unbatched server + client CPU) / (this floor + batched model share).

Usage: python benchmarks/grpc_floor.py [--seconds 8] [--payload 3200]
Prints one JSON object: per server/client pair, calls/s and CPU microseconds per call on each side.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc

SERVICE, METHOD = "floor.Echo", "Echo"
CONCURRENCY = 16


def serve(kind):
    """Run an echo server on a free loopback port; print the port, then serve until killed."""
    def echo(request, context):
        return request

    async def echo_async(request, context):
        return request

    options = [("grpc.so_reuseport", 0)]
    handler = lambda fn: grpc.method_handlers_generic_handler(SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(fn)})
    if kind == "sync":
        server = grpc.server(futures.ThreadPoolExecutor(CONCURRENCY), options=options)
        server.add_generic_rpc_handlers([handler(echo)])
        print(server.add_insecure_port("127.0.0.1:0"), flush=True)
        server.start()
        server.wait_for_termination()
        return

    async def main():
        server = grpc.aio.server(options=options)
        server.add_generic_rpc_handlers([handler(echo_async)])
        print(server.add_insecure_port("127.0.0.1:0"), flush=True)
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def call_for(port, kind, seconds, payload):
    """Calls made by CONCURRENCY clients in `seconds`: threads with a blocking stub, or asyncio tasks."""
    target, path = f"127.0.0.1:{port}", f"/{SERVICE}/{METHOD}"
    counts = []
    if kind == "threads":
        channel = grpc.insecure_channel(target)
        call, end = channel.unary_unary(path), time.monotonic() + seconds

        def worker():
            n = 0
            while time.monotonic() < end:
                call(payload)
                n += 1
            counts.append(n)

        threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        channel.close()
        return sum(counts)

    async def main():
        async with grpc.aio.insecure_channel(target) as channel:
            call, end = channel.unary_unary(path), time.monotonic() + seconds

            async def worker():
                n = 0
                while time.monotonic() < end:
                    await call(payload)
                    n += 1
                counts.append(n)

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    asyncio.run(main())
    return sum(counts)


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--payload", type=int, default=3200, help="request bytes (3,200: a decode response of 784 floats)")
    parser.add_argument("--serve", choices=("sync", "aio"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    payload, report = b"x" * args.payload, {"concurrency": CONCURRENCY, "seconds": args.seconds, "payload_bytes": args.payload}
    for server_kind in ("sync", "aio"):
        for client_kind in ("threads", "aio"):
            server = subprocess.Popen([sys.executable, __file__, "--serve", server_kind], stdout=subprocess.PIPE, text=True)
            try:
                port = int(server.stdout.readline())
                call_for(port, client_kind, 0.5, payload)  # connections up
                server_cpu, client_cpu = cpu_seconds(server.pid), time.process_time()
                calls = call_for(port, client_kind, args.seconds, payload)
                server_cpu, client_cpu = cpu_seconds(server.pid) - server_cpu, time.process_time() - client_cpu
            finally:
                server.kill()
                server.wait()
            report[f"{server_kind}_server_{client_kind}_clients"] = {
                "calls_per_s": round(calls / args.seconds), "server_us_per_call": round(1e6 * server_cpu / calls),
                "client_us_per_call": round(1e6 * client_cpu / calls)}
            print(server_kind, client_kind, report[f"{server_kind}_server_{client_kind}_clients"], file=sys.stderr, flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
