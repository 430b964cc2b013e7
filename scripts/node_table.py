"""Print the README's node table (markdown) from the node schemas, so it never drifts from the code.

Usage: python scripts/node_table.py
"""
from diffcamera.nodes import all_nodes


def main() -> None:
    print("| node (id) | inputs | outputs | what it does |")
    print("|---|---|---|---|")
    for node in all_nodes():
        s = node.define_schema()
        ins = ", ".join(f"`{i.id}`{'?' if i.optional else ''} {i.io_type}" for i in s.inputs)
        outs = ", ".join(f"{o.display_name or o.io_type} ({o.io_type})" for o in s.outputs) or "preview"
        desc = s.description.split(". ")[0].rstrip(".") + "."
        print(f"| **{s.display_name}** (`{s.node_id}`) | {ins} | {outs} | {desc} |")


if __name__ == "__main__":
    main()
