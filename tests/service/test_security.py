"""API keys and the admin token."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.config import Settings, UnsafeSettingsError
from tests.service.audio import wav
from tests.service.conftest import ADMIN_TOKEN, API_KEY, FAST_MACHINE

KEY = {"Authorization": f"Bearer {API_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WRONG = {"Authorization": "Bearer not-the-right-key-at-all"}


@pytest.fixture
def secured(make_client):
    return make_client(api_keys=f"{API_KEY},another-key-9876543210", admin_token=ADMIN_TOKEN)


WRITES = [
    ("post", "/v1/machines", {"json": {"id": "x-1", **FAST_MACHINE}}),
    ("patch", "/v1/machines/fan-01", {"json": {"name": "n"}}),
    ("delete", "/v1/machines/fan-01", {}),
    (
        "post",
        "/v1/machines/fan-01/recordings",
        {"content": wav(1.0, seed=5), "headers": {"Content-Type": "audio/wav"}},
    ),
    ("post", "/v1/windows/1/feedback", {"json": {"label": "normal"}}),
]
ADMIN_CALLS = [
    ("post", "/v1/admin/machines/fan-01/baselines", {"json": {}}),
    ("post", "/v1/admin/machines/fan-01/baselines/1/activate", {}),
    ("post", "/v1/admin/prune", {}),
]


def _call(client, method, path, kwargs, headers=None):
    kwargs = dict(kwargs)
    kwargs["headers"] = {**kwargs.get("headers", {}), **(headers or {})}
    return client.request(method.upper(), path, **kwargs)


def test_writes_need_a_key(secured):
    for method, path, kwargs in WRITES:
        resp = _call(secured, method, path, kwargs)
        assert resp.status_code == 401, (path, resp.text)
        assert resp.json()["error"] == "unauthorized"
        assert resp.headers["www-authenticate"] == "Bearer"
        resp = _call(secured, method, path, kwargs, WRONG)
        assert resp.status_code == 403 and resp.json()["error"] == "forbidden", path
        resp = _call(secured, method, path, kwargs, {"Authorization": f"Basic {API_KEY}"})
        assert resp.status_code == 401, path


def test_keys_allow_writes_and_reads_need_a_key(secured):
    resp = secured.post("/v1/machines", json={"id": "fan-01", **FAST_MACHINE}, headers=KEY)
    assert resp.status_code == 201
    other = {"Authorization": "Bearer another-key-9876543210"}
    assert (
        secured.patch("/v1/machines/fan-01", json={"name": "F"}, headers=other).status_code == 200
    )
    # The admin token can write too.
    assert (
        secured.patch("/v1/machines/fan-01", json={"name": "G"}, headers=ADMIN).status_code == 200
    )
    for path in ("/v1/machines", "/v1/machines/fan-01", "/v1/machines/fan-01/windows"):
        assert secured.get(path).status_code == 401, path
        assert secured.get(path, headers=WRONG).status_code == 403, path
        assert secured.get(path, headers=KEY).status_code == 200, path
        assert secured.get(path, headers=ADMIN).status_code == 200, path
    assert secured.get("/healthz").status_code == 200


def test_admin_endpoints_need_the_admin_token(secured):
    secured.post("/v1/machines", json={"id": "fan-01", **FAST_MACHINE}, headers=KEY)
    for method, path, kwargs in ADMIN_CALLS:
        assert _call(secured, method, path, kwargs).status_code == 401, path
        assert _call(secured, method, path, kwargs, KEY).status_code == 403, path
        assert _call(secured, method, path, kwargs, WRONG).status_code == 403, path
    assert secured.post("/v1/admin/prune", headers=ADMIN).status_code == 200


def test_admin_disabled_without_token(make_client):
    client = make_client(api_keys=API_KEY)
    resp = client.post("/v1/admin/prune", headers=KEY)
    assert resp.status_code == 403 and "HUMWATCH_ADMIN_TOKEN" in resp.json()["detail"]


def test_no_keys_means_open_on_loopback(client):
    assert client.post("/v1/machines", json={"id": "fan-01"}).status_code == 201
    assert client.post("/v1/admin/prune").status_code == 200


def test_bind_rules():
    open_settings = Settings(_env_file=None)
    assert "loopback" in open_settings.check_bind("127.0.0.1")
    assert open_settings.check_bind("::1") and open_settings.check_bind("localhost")
    for host in ("0.0.0.0", "192.168.1.20", "::", "example.org"):
        with pytest.raises(UnsafeSettingsError, match="refusing"):
            open_settings.check_bind(host)
    keyed = Settings(api_keys=API_KEY, admin_token=ADMIN_TOKEN)
    assert keyed.check_bind("0.0.0.0") is None
    assert "admin" in Settings(api_keys=API_KEY).check_bind("0.0.0.0")


def test_keys_from_environment(monkeypatch):
    monkeypatch.setenv("HUMWATCH_API_KEYS", f" {API_KEY} , another-key-9876543210 ,")
    monkeypatch.setenv("HUMWATCH_ADMIN_TOKEN", ADMIN_TOKEN)
    settings = Settings()
    assert settings.api_keys == [API_KEY, "another-key-9876543210"]
    assert settings.admin_token == ADMIN_TOKEN
    monkeypatch.setenv("HUMWATCH_API_KEYS", "short")
    with pytest.raises(ValidationError, match="16 characters"):
        Settings()
