"""Child process: the text of one PDF, under limits it sets on itself before opening the file.

``python -I -m agent.pdf_text FILE MAX_PAGES MAX_CHARS MEMORY_MB CPU_SECONDS`` prints one JSON object:
``{"text": ..., "pages": N}`` or ``{"error": ...}``. The parent (:mod:`agent.attachments`) also kills it
at its wall-clock deadline; a child that dies at a limit prints nothing, which the parent reports.
"""

from __future__ import annotations

import json
import resource
import sys


def extract(path: str, max_pages: int, max_chars: int) -> dict[str, object]:
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    logging.disable(logging.WARNING)  # pypdf warns on every malformed object; the parent reads JSON only
    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            return {"error": "it is password-protected"}
        pages = len(reader.pages)
        parts: list[str] = []
        total = 0
        for i, page in enumerate(reader.pages):
            if i >= max_pages:
                parts.append(f"\n[stopped after {max_pages} of {pages} pages]")
                break
            text = page.extract_text() or ""
            parts.append(f"\n--- page {i + 1} ---\n{text}")
            total += len(text)
            if total >= max_chars:
                parts.append(f"\n[stopped at {max_chars} characters, page {i + 1} of {pages}]")
                break
        return {"text": "".join(parts)[: max_chars + 200].strip(), "pages": pages}
    except (PdfReadError, ValueError, KeyError, TypeError, IndexError, RecursionError) as e:
        return {"error": f"it is not a readable PDF ({type(e).__name__})"}


def main() -> None:
    path, max_pages, max_chars, memory_mb, cpu = sys.argv[1:6]
    resource.setrlimit(resource.RLIMIT_AS, (int(memory_mb) << 20, int(memory_mb) << 20))
    resource.setrlimit(resource.RLIMIT_CPU, (int(cpu), int(cpu)))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    print(json.dumps(extract(path, int(max_pages), int(max_chars))))


if __name__ == "__main__":
    main()
