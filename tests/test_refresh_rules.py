"""refresh: in deploykit.yaml (pure logic): the YAML surface read into canonical rules, the rules file merged,
and every malformed rule refused as a one-line ConfigError with the key and a hint."""
from __future__ import annotations

import copy

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploykit.config import load_config, parse_config
from deploykit.config.rules import parse_rule, to_surface
from deploykit.errors import ConfigError, MaskKeyMissing

MINIMAL = {"deploy_to": "/srv/app", "stages": {"prod": ["deploy@10.0.0.5"]}}

# the shapes file's example, as an operator writes it
SURFACE = """
refresh:
  key_env: DEPLOYKIT_REFRESH_KEY
  rules:
    accounts.User.email: email
    accounts.User.first_name: {faker: first_name}
    accounts.User.password: {fixed: "!"}
    shop_customer.phone: phone
    shop_customer.note: null
    legacy_log.payload: {json: {"user.email": email, "user.name": {faker: name}}}
    accounts.User.username: {hash: {length: 12}}
    accounts.User.is_staff: keep
  subset: {shop_order: "created > now() - interval '30 days'"}
  media: {avatars/: placeholder, exports/: exclude, default: keep}
  proof: {sample: all}
"""


def write(tmp_path, text: str, rules_file: str | None = None):
    path = tmp_path / "deploykit.yaml"
    path.write_text(yaml.safe_dump(MINIMAL) + text)
    if rules_file is not None:
        (tmp_path / "refresh-rules.yaml").write_text(rules_file)
    return path


def refused(tmp_path, refresh: dict, rules_file: str | None = None) -> str:
    if rules_file is not None:
        (tmp_path / "refresh-rules.yaml").write_text(rules_file)
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL, "refresh": refresh}, tmp_path / "deploykit.yaml")
    line = info.value.one_line()
    assert "\n" not in line and "(hint: " in line, line
    return line


def test_the_yaml_surface_reads_into_canonical_rules(tmp_path):
    spec = load_config(write(tmp_path, SURFACE)).refresh
    assert spec.rules == {
        "accounts.User.email": {"kind": "email"},
        "accounts.User.first_name": {"kind": "faker", "provider": "first_name", "locale": "en_US"},
        "accounts.User.password": {"kind": "fixed", "value": "!"},
        "shop_customer.phone": {"kind": "phone"},
        "shop_customer.note": {"kind": "null"},
        "legacy_log.payload": {"kind": "json", "paths": {
            "user.email": {"kind": "email"},
            "user.name": {"kind": "faker", "provider": "name", "locale": "en_US"}}},
        "accounts.User.username": {"kind": "hash", "length": 12},
        "accounts.User.is_staff": {"kind": "keep"},
    }
    assert spec.key_env == "DEPLOYKIT_REFRESH_KEY"
    assert spec.subset == {"shop_order": "created > now() - interval '30 days'"}
    assert spec.media == {"avatars/": "placeholder", "exports/": "exclude", "default": "keep"}
    assert spec.proof_sample is None and spec.rules_file is None and not spec.rules_file_found


def test_defaults_and_no_section(tmp_path):
    assert parse_config(MINIMAL, tmp_path / "deploykit.yaml").refresh is None
    spec = parse_config({**MINIMAL, "refresh": {}}, tmp_path / "deploykit.yaml").refresh
    assert (spec.key_env, spec.rules, spec.subset, spec.media, spec.proof_sample) == (
        "DEPLOYKIT_REFRESH_KEY", {}, {}, {"default": "keep"}, None)
    spec = parse_config({**MINIMAL, "refresh": {"proof": {"sample": 20000}, "media": {"avatars": "exclude"}}},
                        tmp_path / "deploykit.yaml").refresh
    assert spec.proof_sample == 20000 and spec.media == {"avatars/": "exclude", "default": "keep"}


@pytest.mark.parametrize("surface, canonical", [
    ("email", {"kind": "email"}), ("phone", {"kind": "phone"}), ("format", {"kind": "format"}),
    ("ip", {"kind": "ip"}), ("keep", {"kind": "keep"}), (None, {"kind": "null"}), ("null", {"kind": "null"}),
    ("hash", {"kind": "hash", "length": None}), ({"hash": {}}, {"kind": "hash", "length": None}),
    ({"hash": None}, {"kind": "hash", "length": None}), ({"email": {}}, {"kind": "email"}),
    ({"fixed": ""}, {"kind": "fixed", "value": ""}), ({"fixed": 0}, {"kind": "fixed", "value": "0"}),
    ({"faker": {"provider": "name", "locale": "de_DE"}}, {"kind": "faker", "provider": "name", "locale": "de_DE"}),
    ({"json": {"phones.*": "phone", "contacts.*.email": "email"}},
     {"kind": "json", "paths": {"phones.*": {"kind": "phone"}, "contacts.*.email": {"kind": "email"}}}),
])
def test_each_kind_and_its_way_back(surface, canonical):
    assert parse_rule(surface) == canonical
    assert parse_rule(to_surface(canonical)) == canonical
    assert parse_rule(yaml.safe_load(yaml.safe_dump({"r": to_surface(canonical)}))["r"]) == canonical


@pytest.mark.parametrize("rule, words", [
    ("mail", ["refresh.rules.auth.User.email: unknown rule kind 'mail'", "did you mean 'email'?"]),
    ({"hashh": {}}, ["unknown rule kind 'hashh'", "did you mean 'hash'?"]),
    ({"faker": None}, ["refresh.rules.auth.User.email.faker: faker needs a provider"]),
    ({"faker": {"locale": "de_DE"}}, ["faker needs a provider", "e.g. {faker: first_name}"]),
    ({"faker": "first name"}, ["faker.provider: 'first name' is not a Faker provider name"]),
    ({"faker": {"provider": "name", "locale": "Deutsch"}}, ["faker.locale: 'Deutsch' is not a locale"]),
    ({"faker": {"provider": "name", "lang": "de"}}, ["faker.lang: unknown key"]),
    ("faker", ["faker needs settings", "{faker: first_name}"]),
    ({"fixed": None}, ["fixed needs a value, got null", "write 'null' alone for NULL"]),
    ({"fixed": True}, ["fixed needs text, got bool True", "quote the value"]),
    ({"hash": {"length": 4}}, ["hash.length: must be a whole number from 8 to 64, got 4"]),
    ({"hash": {"length": "12"}}, ["hash.length: must be a whole number from 8 to 64"]),
    ({"hash": {"size": 12}}, ["hash.size: unknown key"]),
    ({"hash": 12}, ["expected {length: N}, got int 12"]),
    ({"email": "yes"}, ["email takes no settings"]),
    ({"email": None, "phone": None}, ["a rule is one kind, found: email, phone"]),
    (["email"], ["expected a rule, got list"]),
    (3, ["expected a rule, got int 3"]),
    ({"json": {}}, ["json needs paths"]),
    ({"json": {"user..email": "email"}}, ["json.user..email: 'user..email' has an empty part"]),
    ({"json": {"user.em*": "email"}}, ["'*' stands for a whole part"]),
    ({"json": {"": "email"}}, ["'' is not a dotted path"]),
    ({"json": {"user": "null", "user.email": "email"}}, ["'user' and 'user.email': one is inside the other"]),
    ({"json": {"user.email": "mail"}}, ["json.user.email: unknown rule kind 'mail'"]),
    ({"json": {"a": {"json": {"b": "email"}}}}, ["a json rule inside a json rule"]),
])
def test_malformed_rules_are_refused_with_the_key_and_a_hint(tmp_path, rule, words):
    line = refused(tmp_path, {"rules": {"auth.User.email": rule}})
    assert line.startswith(f"{tmp_path / 'deploykit.yaml'}: refresh.rules.auth.User.email"), line
    for word in words:
        assert word in line, line


@pytest.mark.parametrize("refresh, words", [
    ({"rules": {"email": "email"}}, ["refresh.rules.email: 'email' has 1 part(s)", "app_label.Model.field"]),
    ({"rules": {"a.b.c.d": "email"}}, ["'a.b.c.d' has 4 part(s)"]),
    ({"rules": {"a..b": "email"}}, ["'a..b' is not a dotted name"]),
    ({"rules": {"my table.col": "email"}}, ["is not a dotted name"]),
    ({"rules": {3: "email"}}, ["refresh.rules.3: 3 is not a dotted name"]),
    ({"rules": ["auth.User.email"]}, ["refresh.rules: expected dict, got list"]),
    ({"subset": {"shop_order": 30}}, ["refresh.subset.shop_order: expected an SQL condition as text, got int 30"]),
    ({"subset": {"shop_order": ""}}, ["expected an SQL condition as text"]),
    ({"subset": {"a.b.c": "true"}}, ["refresh.subset.a.b.c: 'a.b.c' has 3 part(s)", "app_label.Model"]),
    ({"media": {"/avatars": "exclude"}}, ["refresh.media./avatars: '/avatars' is not a path inside the media"]),
    ({"media": {"a/../b": "exclude"}}, ["is not a path inside the media"]),
    ({"media": {"avatars/": "blur"}}, ["refresh.media.avatars/: unknown action 'blur'", "placeholder, exclude"]),
    ({"media": {"avatars/": "exclude", "avatars": "keep"}}, ["'avatars/' is given twice"]),
    ({"proof": {"sample": 100}}, ["refresh.proof.sample: expected all or a whole number of at least 10000"]),
    ({"proof": {"samples": 100}}, ["refresh.proof.samples: unknown key", "did you mean 'sample'?"]),
    ({"key_env": "my key"}, ["refresh.key_env: 'my key' is not an environment variable name",
                             "the key itself never goes in a file"]),
    ({"rule": {}}, ["refresh.rule: unknown key", "did you mean 'rules'?"]),
    ("yes", ["refresh: expected a mapping, got str 'yes'"]),
])
def test_malformed_sections_are_refused(tmp_path, refresh, words):
    line = refused(tmp_path, refresh)
    for word in words:
        assert word in line, line


def test_the_rules_file_is_merged_and_a_key_in_both_is_refused(tmp_path):
    path = write(tmp_path, "refresh:\n  rules_file: refresh-rules.yaml\n  rules: {auth.User.email: email}\n",
                 rules_file="rules:\n  auth.User.first_name: {faker: first_name}\n  library_author.name: keep\n")
    spec = load_config(path).refresh
    assert spec.rules == {"auth.User.email": {"kind": "email"},
                          "auth.User.first_name": {"kind": "faker", "provider": "first_name", "locale": "en_US"},
                          "library_author.name": {"kind": "keep"}}
    assert spec.rules_file == tmp_path / "refresh-rules.yaml" and spec.rules_file_found
    assert spec.rule_sources == {"auth.User.email": str(path), "auth.User.first_name": str(spec.rules_file),
                                 "library_author.name": str(spec.rules_file)}
    line = refused(tmp_path, {"rules_file": "refresh-rules.yaml", "rules": {"library_author.name": "null"}})
    assert line.startswith(f"{tmp_path / 'refresh-rules.yaml'}: rules.library_author.name: is also given in "
                           f"{tmp_path / 'deploykit.yaml'} (refresh.rules)"), line
    assert "remove it from one of the two files" in line


@pytest.mark.parametrize("text, words", [
    ("rules:\n  auth.User.email: mail\n", ["refresh-rules.yaml: rules.auth.User.email: unknown rule kind 'mail'"]),
    ("auth.User.email: email\n", ["refresh-rules.yaml: auth.User.email: unknown key", "put every rule under 'rules:'"]),
    ("rules: [a]\n", ["refresh-rules.yaml: rules: expected dict, got list"]),
    ("rules:\n  a.b: email\n  a.b: phone\n", ["refresh-rules.yaml: rules.a.b: duplicate key 'a.b'"]),
    ("rules: {a.b: email\n", ["refresh-rules.yaml: malformed YAML", "rules file"]),
    ("- 1\n", ["refresh-rules.yaml: (top): expected a mapping with 'rules:', got list"]),
])
def test_a_bad_rules_file_names_that_file(tmp_path, text, words):
    line = refused(tmp_path, {"rules_file": "refresh-rules.yaml"}, rules_file=text)
    for word in words:
        assert word in line, line


def test_a_rules_file_not_written_yet_is_no_problem(tmp_path):
    spec = parse_config({**MINIMAL, "refresh": {"rules_file": "sub/rules.yaml"}}, tmp_path / "deploykit.yaml").refresh
    assert spec.rules_file == tmp_path / "sub" / "rules.yaml" and not spec.rules_file_found and spec.rules == {}
    (tmp_path / "refresh-rules.yaml").mkdir()
    line = refused(tmp_path, {"rules_file": "refresh-rules.yaml"})
    assert "refresh.rules_file: " in line and "is not a file" in line
    (tmp_path / "empty.yaml").write_text("")
    spec = parse_config({**MINIMAL, "refresh": {"rules_file": "empty.yaml"}}, tmp_path / "deploykit.yaml").refresh
    assert spec.rules_file_found and spec.rules == {}


def test_the_masking_key_comes_from_the_environment_when_used(tmp_path, monkeypatch):
    spec = parse_config({**MINIMAL, "refresh": {"key_env": "DK_TEST_MASK_KEY"}}, tmp_path / "deploykit.yaml").refresh
    monkeypatch.delenv("DK_TEST_MASK_KEY", raising=False)
    with pytest.raises(MaskKeyMissing, match=r"\$DK_TEST_MASK_KEY is not set"):
        spec.mask_key()
    monkeypatch.setenv("DK_TEST_MASK_KEY", "short")
    with pytest.raises(MaskKeyMissing, match="holds 5 characters, fewer than 16") as info:
        spec.mask_key()
    assert "export DK_TEST_MASK_KEY=" in info.value.one_line()
    monkeypatch.setenv("DK_TEST_MASK_KEY", "s" * 16)
    assert spec.mask_key() == b"s" * 16
    assert "s" * 16 not in repr(spec)


# -- no refresh: section makes the loader crash ------------------------------------------------

BASE = yaml.safe_load(SURFACE)["refresh"]
WORDS = ["email", "phone", "keep", "null", "hash", "faker", "json", "fixed", "format", "ip", "length", "provider",
         "locale", "rules", "subset", "media", "proof", "sample", "all", "default", "placeholder", "a.b", "a.B.c",
         "*", "a.*", "..", "/x", "x" * 70]
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8), st.sampled_from(WORDS))
keys = st.one_of(st.sampled_from(WORDS), st.text(max_size=6), st.integers(), st.none(), st.booleans())
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
                      max_leaves=15)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))


PATHS = [p for p in _paths(BASE) if p]


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(edits=st.lists(st.tuples(st.sampled_from(PATHS), values), min_size=1, max_size=3))
def test_no_traceback_when_the_section_is_mutated(tmp_path_factory, edits):
    data = copy.deepcopy(BASE)
    for path, value in edits:
        node = data
        try:
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = value
        except (KeyError, TypeError):
            continue
    path = tmp_path_factory.mktemp("fuzz") / "deploykit.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "refresh": data}))
    try:
        load_config(path)
    except ConfigError as exc:
        assert "\n" not in exc.one_line() and "hint:" in exc.one_line()
