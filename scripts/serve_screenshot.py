"""The README's picture of ``mtgan serve``: the page after adapting a run to folders of images,
taken by headless Chromium (Playwright).

    python scripts/serve_screenshot.py RUN IMAGES OUT.png

IMAGES holds one subfolder of K images per class, as for ``mtgan adapt --images``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright


def main(run: str, images: str, out: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "mtgan", "serve", "--run", run,
                               "--port", str(port)], stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/api/info", timeout=5)
                break
            except OSError:
                time.sleep(0.1)
        classes = sorted(p for p in Path(images).iterdir() if p.is_dir())
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=shutil.which("chromium"), headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )  # fmt: skip
            page = browser.new_page(viewport={"width": 1280, "height": 420})
            page.goto(url)
            for _ in range(len(classes) - 2):
                page.click("#add")
            for i, folder in enumerate(classes):
                page.fill(f"input[name=name_{i}]", folder.name)
                page.set_input_files(
                    f"input[name=files_{i}]", [str(f) for f in sorted(folder.iterdir())]
                )
            page.fill("#per_class", "10")
            page.click("#adapt")
            page.wait_for_function(
                f"document.querySelectorAll('img.generated').length === {10 * len(classes)}",
                timeout=300_000,
            )
            page.wait_for_function("[...document.images].every((i) => i.complete)")
            page.screenshot(path=out, full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main(*sys.argv[1:])
