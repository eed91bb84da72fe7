#!/usr/bin/env python3
"""Generate crates/apiserver/src/proto/schema.txt: the protobuf field table of
the Kubernetes built-in types.

Reads two crates we already depend on: k8s-pb (prost messages: field numbers
and wire types) and k8s-openapi (the JSON field names). The output is data, one
block per message, read by the apiserver's protobuf codec:

    M <message> [wrapper]
    <tag> <jsonName> <o|r|m> <string|bytes|bool|int32|int64|double|@message>

`o` is a single field, `r` repeated, `m` a map with string keys. `wrapper`
marks Go named-slice types (`+protobuf.nullable=true`) whose JSON form is
their one repeated field.

Usage: scripts/dev/gen-proto-schema.py > crates/apiserver/src/proto/schema.txt
"""
import glob
import os
import re
import sys

REG = os.path.expanduser("~/.cargo/registry/src")


def crate_dir(name):
    found = sorted(glob.glob(f"{REG}/*/{name}"))
    if not found:
        sys.exit(f"{name} not in {REG}; run cargo fetch")
    return found[-1]


PB = crate_dir("k8s-pb-0.9.0") + "/src"
OA = crate_dir("k8s-openapi-0.29.0") + "/src/v1_35"


def fold(name):
    return re.sub(r"[_$\-]", "", name).lower().removeprefix("r#")


json_names = {}
# k8s-openapi's struct for a message: (module dir, folded type name) -> names.
type_names = {}
for path in glob.glob(f"{OA}/**/*.rs", recursive=True):
    names = {}
    for m in re.finditer(r'"([A-Za-z0-9$\-]+)" => Field::Key_', open(path).read()):
        n = m.group(1)
        names[fold(n)] = n
        # `Port` (DaemonEndpoint) is the one name that differs only in case.
        if n != "Port":
            json_names[fold(n)] = n
    rel = os.path.relpath(path, OA)
    type_names[(os.path.dirname(rel), fold(os.path.basename(rel)[:-3]))] = names

ATTR = re.compile(r"#\[prost\((.*?)\)\]")
SCALARS = {"string", "bool", "int32", "int64", "double", "bytes"}


def resolve(module, rust_type):
    """Turn a Rust path relative to `module` into a dotted message name."""
    t = rust_type.replace(" ", "")
    for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<",
                    "::prost::alloc::boxed::Box<"):
        t = t.replace(wrapper, "")
    if "BTreeMap<" in t:
        t = t.split(",", 1)[1]
    t = t.rstrip(">").rstrip(",")
    parts = t.split("::")
    mod = list(module)
    while parts and parts[0] == "super":
        mod.pop()
        parts.pop(0)
    return ".".join(mod + parts)


out = []
missing = set()
for path in sorted(glob.glob(f"{PB}/**/mod.rs", recursive=True)):
    module = os.path.relpath(os.path.dirname(path), PB).split(os.sep)
    if module[0] == "metrics":
        continue
    lines = open(path).read().split("\n")
    i = 0
    doc = []
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("///"):
            doc.append(line)
        m = re.match(r"pub struct (\w+) \{", line)
        if m:
            wrapper = any("+protobuf.nullable=true" in d for d in doc)
            name = ".".join(module + [m.group(1)])
            out.append(f"M {name}" + (" wrapper" if wrapper else ""))
            i += 1
            if line.endswith("{}"):
                i -= 1
            while not line.endswith("{}") and not lines[i].strip().startswith("}"):
                a = ATTR.search(lines[i])
                if a:
                    attr = a.group(1)
                    decl = lines[i + 1].strip()
                    j = i + 1
                    while not decl.endswith(",") or decl.count("<") > decl.count(">"):
                        j += 1
                        decl = decl + " " + lines[j].strip()
                    fname, ftype = decl.removeprefix("pub ").rstrip(",").split(":", 1)
                    tag = re.search(r'tag = "(\d+)"', attr).group(1)
                    key = fold(fname)
                    own = type_names.get((os.sep.join(module), fold(m.group(1))))
                    if own is not None and key in own:
                        json = own[key]
                    elif own is not None and "message" in attr:
                        # A Go struct embedded with `json:",inline"`: its
                        # fields are the parent's in JSON.
                        json = "-"
                    elif key in json_names:
                        json = json_names[key]
                    else:
                        # Types k8s-openapi lacks (admission, imagepolicy):
                        # lowerCamelCase, as go-to-protobuf named them.
                        head, *rest = fname.removeprefix("r#").split("_")
                        json = head + "".join(w.capitalize() for w in rest)
                        missing.add(f"{name}.{json} {attr}")
                    kind = attr.split(",")[0].split("=")[0].strip()
                    if kind == "btree_map":
                        card = "m"
                        vkind = attr.split('"')[1].split(",")[1].strip()
                    else:
                        card = "r" if "repeated" in attr else "o"
                        vkind = kind
                    if vkind == "message":
                        vtype = "@" + resolve(module, ftype)
                    elif vkind in SCALARS:
                        vtype = vkind
                    else:
                        sys.exit(f"unknown prost kind {vkind} in {name}.{fname}")
                    out.append(f"{tag} {json} {card} {vtype}")
                    i = j
                i += 1
            doc = []
        elif not line.startswith("///") and not line.startswith("#["):
            doc = []
        i += 1

for name in sorted(missing):
    print(f"guessed JSON names in {name}", file=sys.stderr)
print("# Generated by scripts/dev/gen-proto-schema.py from k8s-pb and k8s-openapi. Do not edit.")
print("\n".join(out))
