#!/usr/bin/env bash
# Fetches Meta's sam2 1.1.0 source distribution from PyPI (sha256-pinned) and
# copies the pure-Python files that tools/parity/sam2_parity.py imports into
# DEST (default target/sam2-src): the memory-attention modules, what they
# import, the SAM2.1 hiera-t config and the licence. Nothing is built: the
# sdist's setup.py would compile a CUDA extension that MemoryAttention does
# not use.
#
# Usage: tools/parity/fetch_sam2.sh [DEST]
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=${1:-target/sam2-src}
version=1.1.0
sha256=7e0ea252d43c10d853e3acfce0b5770ac683c30481bd6de311300e9d44f45b74
url=https://files.pythonhosted.org/packages/ce/11/d07fc96688f731a85de6d5260e98b709051eded2b7b5667ae292530bcf90/sam2-$version.tar.gz

cache=target/sam2-$version.tar.gz
if [ ! -f "$cache" ] || ! echo "$sha256  $cache" | sha256sum -c --quiet 2>/dev/null; then
    mkdir -p target
    curl -sSfL -o "$cache.partial" "$url"
    mv "$cache.partial" "$cache"
fi
echo "$sha256  $cache" | sha256sum -c --quiet || { echo "sam2-$version.tar.gz: sha256 mismatch" >&2; exit 1; }

files=(
    LICENSE
    sam2/modeling/__init__.py
    sam2/modeling/memory_attention.py
    sam2/modeling/position_encoding.py
    sam2/modeling/sam2_utils.py
    sam2/modeling/sam/__init__.py
    sam2/modeling/sam/transformer.py
    sam2/utils/__init__.py
    sam2/utils/misc.py
    sam2/configs/sam2.1/sam2.1_hiera_t.yaml
)
rm -rf "$dest"
mkdir -p "$dest"
tar -xzf "$cache" -C "$dest" --strip-components=1 "${files[@]/#/sam2-$version/}"
echo "sam2 $version modeling files in $dest"
