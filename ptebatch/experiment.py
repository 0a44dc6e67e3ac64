"""Workload commands: ``ptebatch generate`` (and, later, experiment runs)."""

from __future__ import annotations

from .cli import command


@command("generate", "write a seeded synthetic snapshot")
def _gen_args(p):
    from .generate import PRESETS
    p.add_argument("--folios", type=int, required=True, help="folios to map (count)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("-o", "--output", required=True, help="snapshot file to write (.npz)")
    p.add_argument("--sizes", default="mixed", choices=sorted(PRESETS),
                   help="folio size preset (default: %(default)s)")
    p.add_argument("--moved", type=float, default=0.05,
                   help="fraction of folios moved by mremap to a page offset (0-1, default: %(default)s)")
    p.add_argument("--straddle", type=float, default=0.5,
                   help="fraction of moved large folios placed across a 2 MiB boundary "
                        "(0-1, default: %(default)s)")
    p.add_argument("--holes", type=float, default=0.0,
                   help="fraction of mapped entries made not present (0-1, default: %(default)s)")
    p.add_argument("--lazyfree", type=float, default=0.3,
                   help="fraction of folios that are lazyfree (0-1, default: %(default)s)")


@_gen_args
def _generate(a) -> int:
    import ptebatch as pb
    space = pb.generate(a.folios, seed=a.seed, sizes=a.sizes, moved=a.moved, straddle=a.straddle,
                        holes=a.holes, lazyfree=a.lazyfree)
    space.save(a.output)
    print(f"wrote {a.output}: {space!r}")
    return 0
