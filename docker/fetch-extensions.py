#!/usr/bin/env python3
"""Install DuckDB extension files from their PyPI wheels, standard library only.

The server never downloads an extension at run time: the image build runs this script once.
It reads PyPI's simple index (PEP 503) for each `duckdb-extension-<name>` wheel of the pinned
engine version and this machine's architecture, checks the sha256 the index publishes, and
extracts `extensions/v<version>/<name>.duckdb_extension` into DuckDB's layout:
`<dest>/v<version>/linux_<arch>/<file>.duckdb_extension`. The `postgres` wheel's file is
installed as `postgres_scanner`, the name DuckDB loads it by.

    fetch-extensions.py --version 1.5.5 --dest /out/extensions [--cache DIR] [NAME[:FILE] ...]
"""

import argparse
import hashlib
import html.parser
import io
import os
import platform
import sys
import urllib.parse
import urllib.request
import zipfile

DEFAULT = ["ducklake", "postgres:postgres_scanner", "httpfs", "aws"]
ARCH = {"x86_64": ("x86_64", "amd64"), "amd64": ("x86_64", "amd64"),
        "aarch64": ("aarch64", "arm64"), "arm64": ("aarch64", "arm64")}


class Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs += [v for k, v in attrs if k == "href" and v]


def wheel_url(index, name, version, wheel_arch):
    page = f"{index.rstrip('/')}/duckdb-extension-{name}/"
    with urllib.request.urlopen(page, timeout=60) as r:
        parser = Links()
        parser.feed(r.read().decode())
    want = f"duckdb_extension_{name}-{version}-py3-none-manylinux"
    for href in parser.hrefs:
        url, _, frag = urllib.parse.urljoin(page, href).partition("#")
        file = url.rsplit("/", 1)[-1]
        if file.startswith(want) and file.endswith(f"_{wheel_arch}.whl"):
            algo, _, digest = frag.partition("=")
            if algo != "sha256" or not digest:
                sys.exit(f"fetch-extensions: {page} gives no sha256 for {file}")
            return url, file, digest
    sys.exit(f"fetch-extensions: no {want}*_{wheel_arch}.whl at {page}: "
             f"is duckdb-extension-{name}=={version} published for this architecture?")


def fetch(url, file, digest, cache):
    cached = os.path.join(cache, file) if cache else None
    if cached and os.path.exists(cached):
        with open(cached, "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() == digest:
            return data
    with urllib.request.urlopen(url, timeout=300) as r:
        data = r.read()
    got = hashlib.sha256(data).hexdigest()
    if got != digest:
        sys.exit(f"fetch-extensions: {file}: sha256 {got} does not match the index's {digest}")
    if cached:
        os.makedirs(cache, exist_ok=True)
        with open(cached + ".part", "wb") as f:
            f.write(data)
        os.replace(cached + ".part", cached)
    return data


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--version", required=True, help="DuckDB engine version, e.g. 1.5.5")
    p.add_argument("--dest", required=True, help="extension directory to fill")
    p.add_argument("--arch", default=platform.machine(), help="x86_64 or aarch64")
    p.add_argument("--index", default=os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple"))
    p.add_argument("--cache", help="folder to keep downloaded wheels in")
    p.add_argument("names", nargs="*", default=DEFAULT, help="wheel name[:installed file stem]")
    a = p.parse_args()
    if a.arch not in ARCH:
        sys.exit(f"fetch-extensions: unsupported architecture {a.arch!r}; use x86_64 or aarch64")
    wheel_arch, duck_arch = ARCH[a.arch]
    dest = os.path.join(a.dest, f"v{a.version}", f"linux_{duck_arch}")
    os.makedirs(dest, exist_ok=True)
    for spec in a.names:
        name, _, stem = spec.partition(":")
        url, file, digest = wheel_url(a.index, name, a.version, wheel_arch)
        data = fetch(url, file, digest, a.cache)
        member = f"duckdb_extension_{name}/extensions/v{a.version}/{name}.duckdb_extension"
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            try:
                body = z.read(member)
            except KeyError:
                sys.exit(f"fetch-extensions: {file} has no {member}")
        target = os.path.join(dest, f"{stem or name}.duckdb_extension")
        with open(target + ".part", "wb") as f:
            f.write(body)
        os.replace(target + ".part", target)
        print(f"fetch-extensions: {target} ({len(body)} bytes, from {file})")


if __name__ == "__main__":
    main()
