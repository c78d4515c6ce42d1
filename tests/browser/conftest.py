"""Browser tests: the pack's web extension in the real frontend (comfyui-frontend-package, the version the host's
ComfyUI names), served by a real ComfyUI with the pack, driven in Debian's headless Chromium through Playwright.

Everything stays on loopback: the page's requests to any other host are aborted (and listed in the summary).
Screenshots go to out/screenshots/ (printed at the end of the run).

The fixtures are module-scoped, not session-scoped: Playwright's sync API keeps an event loop running in this
thread while it is started, and the in-process tests (tests/comfy, which call asyncio.run) must not run inside it.
"""
import importlib.util
import json
import os
import sys
import tempfile
import urllib.parse

import pytest

from comfy_client import COMFY_DIR, ROOT, ComfyServer, ensure_models, link_testing_nodes

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-first-run", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-quic", "--no-sandbox", "--disable-gpu"]
SCREENSHOTS = os.path.join(ROOT, "out", "screenshots")
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}
# A fresh user directory per run: no first-run template browser, no "Nodes 2.0" banner, no level-of-detail
# switch (badges and reports stay drawn when a whole workflow is zoomed to fit).
SETTINGS = {"Comfy.TutorialCompleted": True, "LiteGraph.Canvas.MinFontSizeForLOD": 0,
            "Comfy.Workflow.ShowMissingModelsWarning": False}

_blocked: list[str] = []


def _frontend_static() -> str:
    spec = importlib.util.find_spec("comfyui_frontend_package")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("comfyui-frontend-package is not installed in this venv: run `make host` (scripts/host/setup_host.sh)")
    static = os.path.join(list(spec.submodule_search_locations)[0], "static")
    assert os.path.isfile(os.path.join(static, "index.html")), static
    return static


@pytest.fixture(scope="module")
def web_server(tmp_path_factory):
    static = _frontend_static()
    ensure_models()
    link_testing_nodes()
    user_dir = tmp_path_factory.mktemp("comfy_user")
    (user_dir / "default").mkdir()
    (user_dir / "default" / "comfy.settings.json").write_text(json.dumps(SETTINGS))
    with ComfyServer(COMFY_DIR, output_dir=str(tmp_path_factory.mktemp("comfy_web_out")),
                     extra_args=["--user-directory", str(user_dir)], front_end_root=static) as server:
        yield server


@pytest.fixture(scope="module")
def browser_context():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run `make host` (installs Debian's chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed in this venv: run `make host` (scripts/host/setup_host.sh)")
    with sync_playwright() as pw, tempfile.TemporaryDirectory(prefix="ps_chromium_") as profile:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1800, "height": 1000}, device_scale_factor=1)

        def loopback_only(route):
            url = route.request.url
            host = urllib.parse.urlsplit(url).hostname or ""
            if url.startswith(("data:", "blob:")) or host in LOOPBACK:
                route.continue_()
            else:
                _blocked.append(url)
                route.abort()

        context.route("**/*", loopback_only)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="session")
def blocked_requests():
    return _blocked


_used_screenshots = []


@pytest.fixture(scope="session")
def screenshots():
    os.makedirs(SCREENSHOTS, exist_ok=True)
    _used_screenshots.append(SCREENSHOTS)
    return SCREENSHOTS


@pytest.fixture(scope="module")
def editor(web_server, browser_context):
    """The ComfyUI editor, loaded once, with an event log of the run messages (window.__ps.events)."""
    from browser_editor import Editor
    page = browser_context.new_page()
    page.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")
    errors = []
    page.on("pageerror", lambda exc: errors.append(f"{exc}\n{exc.stack or ''}"))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    responses = []
    page.on("response", lambda r: responses.append((urllib.parse.urlsplit(r.url).path, r.status)))
    ed = Editor(page, web_server, errors)
    ed.responses = responses
    ed.open()
    yield ed
    page.close()


def pytest_terminal_summary(terminalreporter):
    if _used_screenshots:
        terminalreporter.write_line(f"browser screenshots: {SCREENSHOTS}")
    if _blocked:
        hosts = sorted({urllib.parse.urlsplit(u).hostname for u in _blocked})
        terminalreporter.write_line(f"browser: blocked {len(_blocked)} non-loopback request(s) to {', '.join(hosts)}")
