#!/usr/bin/env python3
"""A large English prose text for perplexity comparisons, from the Rust books
that rustup installs with every toolchain (the `rust-docs` component).

  scripts/rust-books-text.py OUT.txt [HTML_DIR]

HTML_DIR defaults to `$(rustc +1.95.0 --print sysroot)/share/doc/rust/html`
(the toolchain is pinned so that the text, and so its sha256, stays the same
whatever `stable` is; set RUST_BOOKS_TOOLCHAIN to use another). From each
book's single-page `print.html`, in the order of BOOKS below, it keeps the
text of paragraphs, list items, headings, block quotes and definition lists
inside <main>, and drops everything that is code or chrome: <pre> blocks
(every code listing and its output), <script>, <style>, <nav>, tables,
footnote definitions and the "hidden" lines mdBook keeps for the playground.
Inline <code> stays (it is part of the sentences). Whitespace is collapsed
inside a block; blocks are separated by one blank line. A block whose text
was already written (the books repeat some notes and headings) is written
once. Python standard library only (html.parser); the output is a pure
function of the HTML files.

With 1.95.0's docs (rustup's `1.95.0-x86_64-unknown-linux-gnu`): 1,120,454
bytes, 255,147 tokens with the default model's vocabulary (BOS included),
sha256 110f920b764ee7533b1f4d17dbbc81d8f8d041de6a584dfe8168b287388bb063.
"""
import hashlib
import html.parser
import os
import re
import subprocess
import sys

# The two largest prose books: with 1.95.0's docs, The Rust Programming
# Language gives 211,660 tokens and the Rustonomicon 44,868 (the default
# model's vocabulary). Others with little code, for a longer text later:
# edition-guide (29k), embedded-book (32k), rustdoc (25k), style-guide (11k).
# The Reference, rustc, Cargo and the unstable book are left out: mostly
# grammar, flags and tables.
BOOKS = ["book", "nomicon"]

BLOCK = {"p", "li", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "dt", "dd"}
SKIP = {"pre", "script", "style", "nav", "table", "svg", "button"}


class Prose(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.in_main = 0
        self.skip = 0
        self.stack = []  # open block tags, innermost last
        self.buf = []
        self.blocks = []

    def flush(self):
        text = re.sub(r"\s+", " ", "".join(self.buf)).strip()
        self.buf = []
        if text:
            self.blocks.append(text)

    def handle_starttag(self, tag, attrs):
        if tag == "main":
            self.in_main += 1
            return
        if not self.in_main:
            return
        cls = dict(attrs).get("class") or ""
        if self.skip or tag in SKIP or "footnote-definition" in cls or "hidden" in cls.split():
            if tag not in VOID:
                self.skip += 1
            return
        if tag in BLOCK:
            # a nested block (a <p> inside an <li>) ends the outer one's text so far
            self.flush()
            self.stack.append(tag)
        elif tag == "br":
            self.buf.append(" ")

    def handle_endtag(self, tag):
        if tag == "main":
            self.flush()
            self.in_main = max(0, self.in_main - 1)
            return
        if not self.in_main:
            return
        if self.skip:
            if tag not in VOID:
                self.skip -= 1
            return
        if tag in BLOCK and tag in self.stack:
            self.flush()
            while self.stack and self.stack.pop() != tag:
                pass

    def handle_data(self, data):
        if self.in_main and not self.skip and self.stack:
            self.buf.append(data)


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def html_dir():
    if len(sys.argv) > 2:
        return sys.argv[2]
    tc = os.environ.get("RUST_BOOKS_TOOLCHAIN", "1.95.0")
    try:
        root = subprocess.run(["rustc", f"+{tc}", "--print", "sysroot"], check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"cannot find toolchain {tc}'s sysroot ({e}); install it with "
                 f"`rustup toolchain install {tc} --component rust-docs`, or pass HTML_DIR")
    return os.path.join(root, "share", "doc", "rust", "html")


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    out, root = sys.argv[1], html_dir()
    seen = set()
    parts = []
    for book in BOOKS:
        path = os.path.join(root, book, "print.html")
        if not os.path.isfile(path):
            sys.exit(f"{path}: missing (the rust-docs component holds it: "
                     f"`rustup component add rust-docs`)")
        p = Prose()
        with open(path, encoding="utf-8") as f:
            p.feed(f.read())
        p.close()
        kept = 0
        for b in p.blocks:
            if b in seen:
                continue
            seen.add(b)
            parts.append(b)
            kept += 1
        print(f"{book}: {kept} blocks", file=sys.stderr)
    data = ("\n\n".join(parts) + "\n").encode("utf-8")
    with open(out, "wb") as f:
        f.write(data)
    print(f"{out}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}", file=sys.stderr)


if __name__ == "__main__":
    main()
