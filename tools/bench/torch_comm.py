#!/usr/bin/env python3
"""torch_comm.py - the rows of 'sluice bench comm' done with torch.distributed on NCCL.

One process per GPU (torch.multiprocessing.spawn), the same sizes, the same number of
calls per burst and the same timing (3 warm-up calls, then REPS bursts of back-to-back
calls between two CUDA events on the current stream, median burst), the same byte
counts in the GB/s column:
  all_to_all            all_to_all_single, equal splits
  all_to_all (p2p)      all_to_all_single with explicit split sizes (grouped send/recv)
  send/recv             batch_isend_irecv: each rank sends SIZE to the next, receives from the previous
  a2av host counts      all_to_all_single with split sizes known on the host
  a2av count exchange   counts on the GPU: all_to_all_single of the counts, .tolist() (a host sync), then the data
  a2av worst case       counts and fixed blocks of SIZE to every peer, no sync
Usage: torch_comm.py --gpus N [--sizes 1M,8M,64M,256M] [--reps 7] [--csv FILE]
"""
import argparse
import os
import socket
import sys

ROW_ELEMS = 7168
ROW_BYTES = 2 * ROW_ELEMS
NSETS = 16


def parse_size(s):
    mul = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    s = s.strip().upper().replace("IB", "").replace("B", "")
    if s[-1] in mul:
        return int(float(s[:-1]) * mul[s[-1]])
    return int(s)


def iters_for(size):
    k = (512 << 20) // max(size, 1)
    return max(10, min(200, k))


def worker(rank, n, args, port):
    import torch
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.cuda.set_device(rank)
    dev = torch.device("cuda", rank)
    dist.init_process_group("nccl", rank=rank, world_size=n, device_id=dev)
    stream = torch.cuda.current_stream()

    def time_op(fn, iters):
        for i in range(3):
            fn(i)
        torch.cuda.synchronize()
        ts = []
        e0 = torch.cuda.Event(enable_timing=True)
        e1 = torch.cuda.Event(enable_timing=True)
        call = 3
        for _ in range(args.reps):
            e0.record(stream)
            for _ in range(iters):
                fn(call)
                call += 1
            e1.record(stream)
            e1.synchronize()
            ts.append(e0.elapsed_time(e1) * 1e-3 / iters)
        ts.sort()
        return ts[len(ts) // 2]

    rows_out = []

    def row(op, size, secs, bytes_out):
        if rank == 0:
            gbps = bytes_out / secs / 1e9
            sz = f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"
            print(f"{op:<28} {sz:>9} {secs * 1e6:12.1f} {gbps:10.1f}", flush=True)
            rows_out.append(f"torch,{op},{size},{secs * 1e6:.3f},{gbps:.2f}")

    if rank == 0:
        print(f"torch_comm: {n} ranks, {torch.cuda.get_device_name(dev)}, torch {torch.__version__}, "
              f"NCCL {'.'.join(map(str, torch.cuda.nccl.version()))}, "
              f"NCCL_NVLS_ENABLE={os.environ.get('NCCL_NVLS_ENABLE', '(unset)')}")
        print(f"{'operation':<28} {'size':>9} {'time (us)':>12} {'GB/s':>10}")
    for size0 in args.sizes:
        size = size0 // n * n
        iters = args.iters or iters_for(size)
        blk = size // n
        s = torch.full((size,), 0x5A, dtype=torch.uint8, device=dev)
        r = torch.empty(size, dtype=torch.uint8, device=dev)
        splits = [blk] * n
        nxt, prv = (rank + 1) % n, (rank + n - 1) % n
        blk_out = blk * (n - 1)
        row("all_to_all", size, time_op(lambda i: dist.all_to_all_single(r, s), iters), blk_out)
        row("all_to_all (p2p)", size,
            time_op(lambda i: dist.all_to_all_single(r, s, splits, splits), iters), blk_out)

        def sendrecv(i):
            ops = [dist.P2POp(dist.isend, s, nxt), dist.P2POp(dist.irecv, r, prv)]
            for w in dist.batch_isend_irecv(ops):
                w.wait()
        row("send/recv", size, time_op(sendrecv, iters), size)
        del s, r

        total = size // ROW_BYTES
        if total < n:
            continue
        # the generator of bench_comm.c: a 64-bit LCG seeded with the size
        state = [size]

        def next_rand():
            state[0] = (state[0] * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
            return state[0] >> 33
        rows = []  # rows[set][src][dst]
        useful = 0.0
        for st in range(NSETS):
            m = []
            for src in range(n):
                w = [0.25 + (next_rand() % 1000) / 1000.0 for _ in range(n)]
                tot = 0.0
                for x in w:
                    tot += x
                left = total
                rr = []
                for p in range(n):
                    v = left if p == n - 1 else min(left, int(total * w[p] / tot))
                    left -= v
                    rr.append(v)
                    if src == rank and p != rank:
                        useful += v * ROW_BYTES / NSETS
                m.append(rr)
            rows.append(m)
        cap = total * ROW_ELEMS
        sb = torch.ones(n * cap, dtype=torch.bfloat16, device=dev)
        rb = torch.empty(n * cap, dtype=torch.bfloat16, device=dev)
        scount = [[rows[st][rank][p] * ROW_ELEMS for p in range(n)] for st in range(NSETS)]
        rcount = [[rows[st][p][rank] * ROW_ELEMS for p in range(n)] for st in range(NSETS)]
        d_counts = torch.tensor(scount, dtype=torch.int64, device=dev)
        d_rcounts = torch.empty(n, dtype=torch.int64, device=dev)

        def host(i):
            st = i % NSETS
            dist.all_to_all_single(rb[:sum(rcount[st])], sb[:sum(scount[st])], rcount[st], scount[st])

        def exchange(i):
            st = i % NSETS
            dist.all_to_all_single(d_rcounts, d_counts[st])
            rc = d_rcounts.tolist()
            sc = d_counts[st].tolist()
            dist.all_to_all_single(rb[:sum(rc)], sb[:sum(sc)], rc, sc)

        def fixed(i):
            st = i % NSETS
            dist.all_to_all_single(d_rcounts, d_counts[st])
            dist.all_to_all_single(rb, sb)

        row("a2av host counts", size, time_op(host, iters), useful)
        row("a2av count exchange", size, time_op(exchange, iters), useful)
        # check the exchange once: the counts that came back are the expected ones
        exchange(5)
        assert d_rcounts.tolist() == rcount[5 % NSETS], "count exchange gave wrong counts"
        row("a2av worst case", size, time_op(fixed, iters), useful)
        del sb, rb
    if rank == 0 and args.csv:
        with open(args.csv, "w") as f:
            f.write("\n".join(rows_out) + "\n")
    dist.barrier()
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", type=int, default=2)
    ap.add_argument("--sizes", default="1M,8M,64M,256M")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--iters", type=int, default=0)
    ap.add_argument("--csv")
    args = ap.parse_args()
    args.sizes = [parse_size(s) for s in args.sizes.split(",")]
    import torch
    import torch.multiprocessing as mp
    if torch.cuda.device_count() < args.gpus:
        print(f"torch_comm: --gpus {args.gpus}, but torch sees {torch.cuda.device_count()} GPUs", file=sys.stderr)
        return 1
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    mp.spawn(worker, args=(args.gpus, args, port), nprocs=args.gpus, join=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
