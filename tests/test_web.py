"""ttsopt.web: the HTTP plumbing both servers share, importing nothing of ttsopt."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from ttsopt.web import BodyLimit, install_error_handlers, start_background, validation_message

WEB = Path(__file__).resolve().parents[1] / "web"


class Body(BaseModel):  # module level: with postponed annotations FastAPI resolves the name here
    x: int


def test_web_imports_nothing_of_ttsopt():
    for path in WEB.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] == "ttsopt" for a in node.names), path
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert (node.module or "").split(".")[0] != "ttsopt", path
            if isinstance(node, ast.ImportFrom) and node.level > 1:
                raise AssertionError(f"{path}: imports from above ttsopt.web")
    code = ("import sys, ttsopt.web; "
            "print(sorted(m for m in sys.modules if m.startswith('ttsopt') and not m.startswith('ttsopt.web')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['ttsopt']"  # the package's lazy __init__, nothing else
    out = subprocess.run([sys.executable, "-c", "import sys, ttsopt.web; print('fastapi' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # cheap to import: FastAPI loads when a function runs


def test_validation_messages_name_the_field_and_drop_union_noise():
    errors = [
        {"type": "string_type", "loc": ("body", "messages", 0, "content", "str"), "msg": "Input should be a valid string",
         "input": [{"type": "text", "text": 5}]},
        {"type": "string_type", "loc": ("body", "messages", 0, "content", "list[ContentPart]", 0, "text"),
         "msg": "Input should be a valid string", "input": 5},
        {"type": "missing", "loc": ("body", "model"), "msg": "Field required", "input": {}},
    ]
    assert validation_message(errors) == ("messages[0].content[0].text: Input should be a valid string (got a number); "
                                          "model: Field required")
    bad_json = [{"type": "json_invalid", "loc": ("body", 14), "msg": "JSON decode error",
                 "ctx": {"error": "Expecting value"}}]
    assert validation_message(bad_json) == "body is not valid JSON: Expecting value at character 14"


def test_one_app_with_the_shared_handlers_and_body_limit_over_a_real_socket():
    app = FastAPI()

    @app.post("/echo")
    def echo(body: Body):
        return {"x": body.x}

    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=64)
    with TestClient(app) as c:
        assert c.post("/echo", json={"x": 1}).json() == {"x": 1}
        r = c.post("/echo", json={"x": "one"})
        assert r.status_code == 400 and r.json()["error"]["message"].startswith("x: ")
        r = c.post("/echo", json={"x": 1, "pad": "p" * 100})
        assert r.status_code == 413 and r.json()["error"]["type"] == "RequestTooLargeError"
        assert c.get("/nope").json()["error"]["type"] == "NotFoundError"
    with start_background(app) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert httpx.post(f"{server.url}/echo", json={"x": 2}, timeout=5).json() == {"x": 2}
