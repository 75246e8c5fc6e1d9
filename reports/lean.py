#!/usr/bin/env python3
"""Keep committed run documents lean: drop the wire transcripts of cases that
PASSed or did not apply (UNSUPPORTED), keep every other case's whole. A run
writes every transcript (`run --report-dir`); the full documents belong in CI
artefacts, not in every clone's history. Afterwards re-render the HTML from
the lean document (reports/README.md shows how).

Usage: python3 reports/lean.py DIR/run.json [...]
"""
import json
import sys

NO_TRANSCRIPT = {"PASS", "UNSUPPORTED"}

for path in sys.argv[1:]:
    with open(path) as f:
        doc = json.load(f)
    dropped = 0
    for r in doc.get("results", []):
        if r.get("outcome") in NO_TRANSCRIPT and r.get("transcript"):
            del r["transcript"]
            dropped += 1
    with open(path, "w") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print(f"{path}: transcripts of {dropped} passing or inapplicable case(s) dropped")
