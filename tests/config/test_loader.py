# SPDX-License-Identifier: AGPL-3.0-or-later
from pathlib import Path

import pytest

from ozwald.config import ConfigError, load_settings, parse_settings

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "contrib" / "examples" / "contract.yml"

BASE = """\
hosts:
  - name: localhost
    ip: 127.0.0.1
provisioners:
  - name: local
    host: localhost
    cache:
      type: redis
      parameters: {host: 127.0.0.1, port: 6379, db: 0}
services:
"""


def issues_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_settings(text, "ozwald.yml")
    return [str(issue) for issue in info.value.issues]


def test_contract_example_loads_as_documented() -> None:
    settings = load_settings(CONTRACT)
    assert [h.name for h in settings.hosts] == ["localhost"]
    assert settings.provisioners[0].cache.parameters.port == 6379
    qwen = settings.service("qwen1.5-vllm")
    assert qwen is not None
    assert list(qwen.varieties) == ["nvidia", "amdgpu", "cpu-only"]
    assert list(qwen.profiles) == ["no-gpu", "fast-gpu"]
    assert qwen.varieties["nvidia"].image == "openai-api-vllm.nvidia"
    sources = settings.service("fiction-sources")
    assert sources is not None and sources.type == "source-files"


def test_env_values_keep_the_operators_spelling() -> None:
    settings = parse_settings(BASE + """\
  - name: s
    image: x
    environment:
      A: true
      B: 0.9
      C: ""
      D: 1e3
      E: 0.90
      F: yes
      G: 007
""")
    service = settings.service("s")
    assert service is not None and service.environment is not None
    assert service.environment == {"A": "true", "B": "0.9", "C": "", "D": "1e3", "E": "0.90", "F": "yes", "G": "007"}


def test_env_values_from_python_render_like_yaml() -> None:
    from ozwald.config.model import Settings

    settings = Settings.model_validate({"services": [{"name": "s", "image": "x",
                                                      "environment": {"A": True, "B": 0.9, "C": 3}}]})
    assert settings.services[0].environment == {"A": "true", "B": "0.9", "C": "3"}


def test_unknown_key_names_file_line_and_path() -> None:
    found = issues_of(BASE + """\
  - name: s
    varieties:
      nvidia:
        imgae: foo
""")
    assert found == ["ozwald.yml:14: services[0].varieties.nvidia.imgae: unknown key"]


def test_unknown_top_level_key() -> None:
    assert issues_of("servcies: []\n") == ["ozwald.yml:1: servcies: unknown key"]


def test_duplicate_yaml_keys_are_rejected() -> None:
    found = issues_of(BASE + """\
  - name: s
    image: a
    image: b
""")
    assert found == ["ozwald.yml:13: services[0].image: duplicate key (first defined on line 12)"]


def test_duplicate_names() -> None:
    found = issues_of(BASE + """\
  - name: s
    image: a
  - name: s
    image: b
""")
    assert found == ["ozwald.yml:13: services[1].name: duplicate name 's' (also services[0])"]


def test_provisioner_with_undefined_host() -> None:
    found = issues_of(BASE.replace("host: localhost", "host: elsewhere"))
    assert found == ["ozwald.yml:6: provisioners[0].host: host 'elsewhere' is not defined in hosts (localhost)"]


@pytest.mark.parametrize("name", ["bad name", "-lead", "a/b", "x" * 64, "new\nline", "ünï", "$x", "a%b"])
def test_bad_names_are_rejected(name: str) -> None:
    import json

    found = issues_of(BASE + f"  - name: {json.dumps(name)}\n    image: x\n")
    assert len(found) == 1
    assert found[0].startswith("ozwald.yml:11: services[0].name: invalid name")


def test_bad_variety_and_profile_names() -> None:
    found = issues_of(BASE + """\
  - name: s
    image: x
    varieties:
      "bad variety": {}
""")
    assert found[0].startswith("ozwald.yml:14: services[0].varieties.bad variety: invalid name")


@pytest.mark.parametrize("value,message", [
    ("[1, 2]", "environment values must be scalars (string, number or boolean), not list"),
    ("{a: 1}", "a mapping environment value is {value|file|credential: ..., secret: true/false}: a: unknown key"),
])
def test_env_value_that_is_neither_a_scalar_nor_a_secret_source(value: str, message: str) -> None:
    found = issues_of(BASE + f"""\
  - name: s
    image: x
    profiles:
      p:
        environment:
          X: {value}
""")
    assert found == [f"ozwald.yml:16: services[0].profiles.p.environment.X: {message}"]


def test_null_env_value_is_rejected_with_a_hint() -> None:
    found = issues_of(BASE + "  - name: s\n    image: x\n    environment:\n      X:\n")
    assert found == ['ozwald.yml:14: services[0].environment.X: a null environment value is ambiguous: '
                     'write "" for an empty value']


def test_container_service_without_image() -> None:
    found = issues_of(BASE + """\
  - name: s
    varieties:
      nvidia: {image: x}
      cpu-only: {environment: {A: b}}
""")
    assert found == ["ozwald.yml:14: services[0].varieties.cpu-only.image: no image for this variety, "
                     "and the service sets none"]


def test_source_files_service_rejects_container_keys() -> None:
    found = issues_of(BASE + """\
  - name: docs
    type: source-files
    image: x
    environment: {DIRECTORY: sources/}
""")
    assert found == ["ozwald.yml:13: services[0].image: not allowed on a 'source-files' service: "
                     "only container services run"]


def test_unknown_service_type() -> None:
    found = issues_of(BASE + "  - name: s\n    type: vm\n    image: x\n")
    assert len(found) == 1 and found[0].startswith("ozwald.yml:12: services[0].type:")


def test_every_issue_is_reported_not_just_the_first() -> None:
    found = issues_of(BASE + """\
  - name: s
    image: "bad image"
    ports: ["abc"]
    environment:
      1BAD: x
""")
    assert [f.split(": ")[1] for f in found] == ["services[0].image", "services[0].ports[0]",
                                                 "services[0].environment.1BAD"]


def test_devices_with_optional_prefix_are_rejected() -> None:
    found = issues_of(BASE + "  - name: s\n    image: x\n    devices: ['-nvidia.com/gpu=0']\n")
    assert "silently drops the device" in found[0]
    assert found[0].startswith("ozwald.yml:13: services[0].devices")


def test_ports_volumes_and_durations_parse() -> None:
    settings = parse_settings(BASE + """\
  - name: s
    image: localhost/x:latest
    ports: ["127.0.0.1:8000:80", "9000", {container: 53, protocol: udp}, "[::1]::7000/tcp"]
    volumes: ["/srv/models:/models:ro", "cache:/root/.cache", {source: /a, target: /b, options: [z]}]
    health: {http: "http://127.0.0.1:80/health", interval: 1m30s, start_period: 10m, timeout: 500ms}
    start_timeout: 2h
""")
    service = settings.service("s")
    assert service is not None and service.ports is not None and service.volumes is not None
    assert [p.podman_spec() for p in service.ports] == [
        "127.0.0.1:8000:80/tcp", "9000:9000/tcp", "53/udp", "[::1]::7000/tcp"]
    assert [v.podman_spec() for v in service.volumes] == ["/srv/models:/models:ro", "cache:/root/.cache", "/a:/b:z"]
    assert service.health is not None
    assert (service.health.interval, service.health.start_period, service.health.timeout) == (90.0, 600.0, 0.5)
    assert service.start_timeout == 7200.0


@pytest.mark.parametrize("text", ["a: [", "a:\n  - x\n b: 1", "\t- x", "a: 'unterminated"])
def test_yaml_syntax_errors_have_a_line(text: str) -> None:
    found = issues_of(text)
    assert len(found) == 1 and found[0].startswith("ozwald.yml:") and "invalid YAML" in found[0]


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings("/nonexistent/ozwald.yml")
    assert str(info.value) == "/nonexistent/ozwald.yml: settings file not found"


def test_redis_password_is_never_printed() -> None:
    settings = parse_settings(BASE.replace("db: 0}", "db: 0, password: hunter2-secret}"))
    params = settings.provisioners[0].cache.parameters
    assert params.password is not None and params.password.get_secret_value() == "hunter2-secret"
    assert "hunter2" not in repr(settings) and "hunter2" not in str(params)


@pytest.mark.parametrize("arg,fragment", [('""', "empty arguments are dropped"), ("';'", "command separator")])
def test_command_words_that_systemd_would_change_are_refused(arg: str, fragment: str) -> None:
    found = issues_of(BASE + f"  - name: s\n    image: x\n    command: [serve, {arg}]\n")
    assert len(found) == 1 and found[0].startswith("ozwald.yml:13: services[0].command") and fragment in found[0]


def test_unprintable_character_in_yaml_names_the_line() -> None:
    assert issues_of("a: 1\nb: \"x\x7f\"\n") == [
        "ozwald.yml:2: invalid YAML: character #x007f is not allowed in YAML text"]


@pytest.mark.parametrize("key,value", [("name", "abc\n"), ("image", "x:latest\n"), ("devices", ["nvidia.com/gpu=0\n"]),
                                       ("volumes", ["/a\n:/b"]), ("shm_size", "1g\n")])
def test_trailing_newline_never_passes_a_pattern(key: str, value: object) -> None:
    from pydantic import ValidationError

    from ozwald.config.model import Settings

    service = {"name": "s", "image": "x", key: value}
    with pytest.raises(ValidationError):
        Settings.model_validate({"services": [service]})
