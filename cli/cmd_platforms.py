"""`hwsim platforms`: the shipped offload platforms, or a documented platform YAML to start a new one from."""

from __future__ import annotations

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser(
        "platforms",
        help="list the offload platforms (GPU + host + storage) or print a template",
        description="List the platforms `hwsim offload --platform` accepts by name, or print a "
        "documented platform YAML to write your own.",
    )
    p.add_argument("--template", action="store_true", help="print a documented platform YAML on stdout")
    p.add_argument("--json", action="store_true", help="print the list as one JSON document")
    p.set_defaults(func=run)


def run(args) -> int:
    from offload.platform import PLATFORM_TEMPLATE, get_platform, list_platforms

    if args.template:
        print(PLATFORM_TEMPLATE.read_text(encoding="utf-8"), end="")
        return 0
    rows = []
    for name in list_platforms():
        p = get_platform(name)
        storage = []
        if p.ssd is not None:
            storage.append(f"{p.ssd.count} x {p.ssd.model}")
        if p.csd is not None:
            storage.append(f"{p.csd.count} x {p.csd.model} (CSD)")
        rows.append(
            {
                "name": name,
                "gpu": p.gpu_spec.name,
                "gpu_link": f"PCIe Gen{p.gpu_link.generation} x{p.gpu_link.lanes}",
                "host_dram_bytes": p.host.dram_bytes,
                "storage": ", ".join(storage),
                "description": p.description,
            }
        )
    if args.json:
        from cli._common import print_json

        print_json(rows)
        return 0
    from rich.table import Table

    from cli._common import console, fmt_bytes

    t = Table(
        title="offload platforms (hwsim offload --platform NAME; hwsim platforms --template for your own)",
        header_style="bold",
    )
    for col in ("name", "gpu", "link", "host DRAM", "storage"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], r["gpu"], r["gpu_link"], fmt_bytes(r["host_dram_bytes"]), r["storage"])
    console().print(t)
    return 0
