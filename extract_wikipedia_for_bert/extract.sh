#!/usr/bin/env bash
# Stage II: a Wikipedia dump to BERT's text format (one sentence per line, a
# blank line after every article).
#
#   extract.sh DUMP OUT_FOLDER [TEXT_FILE]
#
# 1. Runs WikiExtractor (the `wikiextractor` package from PyPI) on DUMP with
#    the options that suit BERT: JSON lines (the title stays out of the text),
#    one process per core, bz2-compressed output files, empty pages (redirects)
#    discarded, and templates expanded from the definitions in the dump itself
#    (no network: templates built on Lua modules expand to nothing). The
#    template definitions are cached in OUT_FOLDER.templates so that a rerun
#    skips the first pass over the dump.
#    The output appears under OUT_FOLDER only when WikiExtractor succeeded; an
#    existing OUT_FOLDER is taken as done and not extracted again.
# 2. With TEXT_FILE: runs extract_jsons.py on OUT_FOLDER to write TEXT_FILE,
#    with PROCESSES workers.
#
# Environment: PYTHON (default python), PROCESSES (default: all cores),
# BYTES (WikiExtractor's size of one output file before compression, default
# 1M; each extract_jsons.py worker holds one such file in memory).
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
  echo "usage: $0 DUMP OUT_FOLDER [TEXT_FILE]" >&2
  exit 2
fi
DUMP=$1
OUT=${2%/}
TEXT_FILE=${3:-}
PYTHON=${PYTHON:-python}
PROCESSES=${PROCESSES:-$(nproc 2>/dev/null || echo 1)}
BYTES=${BYTES:-1M}
HERE=$(cd "$(dirname "$0")" && pwd)

if [[ ! -f "$DUMP" ]]; then
  echo "error: dump $DUMP not found (download e.g. enwiki-latest-pages-articles.xml.bz2)" >&2
  exit 1
fi

if [[ -d "$OUT" ]]; then
  echo "extract.sh: $OUT exists, WikiExtractor skipped (delete it to extract again)"
else
  PARTIAL="$OUT.partial"
  rm -rf "$PARTIAL"
  mkdir -p "$(dirname "$OUT")"
  echo "extract.sh: WikiExtractor $DUMP -> $OUT ($PROCESSES processes)"
  if ! "$PYTHON" -m wikiextractor.WikiExtractor \
      --json \
      --compress \
      --discard_empty \
      --processes "$PROCESSES" \
      --bytes "$BYTES" \
      --templates "$OUT.templates" \
      --output "$PARTIAL" \
      "$DUMP"; then
    # The template cache may be incomplete too.
    rm -f "$OUT.templates"
    echo "error: WikiExtractor failed on $DUMP" >&2
    exit 1
  fi
  if ! find "$PARTIAL" -name 'wiki_*' -print -quit 2>/dev/null | grep -q .; then
    echo "error: WikiExtractor wrote no wiki_* file for $DUMP" >&2
    exit 1
  fi
  mv "$PARTIAL" "$OUT"
fi

if [[ -n "$TEXT_FILE" ]]; then
  "$PYTHON" "$HERE/extract_jsons.py" --folder "$OUT" --write_file "$TEXT_FILE" \
      --num_workers "$PROCESSES"
fi
