"""Render an HTML file in the system's headless Chromium through playwright.

playwright drives Debian's `chromium` (apt install chromium); its own browser download is
never used, so this works offline. Tests skip with the reason when either is missing.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


@dataclass
class Rendered:
    problems: list[str]  # console errors/warnings, page errors, failed requests
    images: int
    broken_images: list[str]  # alt texts of images that did not decode
    section_ids: list[str]
    screenshot: bytes


def render(path: Path, executable: str) -> Rendered:
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console",
                lambda m: (
                    problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url[:80]}"))
            page.goto(path.resolve().as_uri(), wait_until="load")
            broken = page.evaluate(
                "[...document.images].filter(i => !(i.complete && i.naturalWidth > 0))"
                ".map(i => i.alt)"
            )
            images = page.evaluate("document.images.length")
            ids = page.evaluate("[...document.querySelectorAll('section')].map(s => s.id)")
            shot = page.screenshot(full_page=True)
        finally:
            browser.close()
    return Rendered(problems, images, broken, ids, shot)
