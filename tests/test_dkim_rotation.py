"""`mailctl dkim rotate`: the next safe step of a DKIM key rotation, from where the stack stands."""

from __future__ import annotations

import datetime

import pytest
import yaml

from components.settings.values import PublishedSelector
from mailctl.cli import main
from mailctl.rotation import DKIM, Stand, config_commands, next_step as next_rotation_step, with_config
from tests.conftest import PROJECT_DIR, stack_config

TODAY = datetime.date(2026, 11, 26)
NEXT = {"selector": "ceres2026", "reason": "next key, published 2026-11-26; signs from step 2 of the rotation"}
PREVIOUS = {"selector": "ceres", "reason": "previous key, signed until 2026-11-26; retire on 2026-12-03 or later"}


def entries(*selectors: str) -> tuple[PublishedSelector, ...]:
    return tuple(PublishedSelector(selector) for selector in selectors)


def next_step(signing: str, published: tuple[PublishedSelector, ...], new: str, ttl: int, today: datetime.date):
    return next_rotation_step(Stand(DKIM, signing, published, new, ttl, today))


@pytest.mark.parametrize("signing, published, title, config", [
    ("ceres", entries(), "step 1 of 3", {"dkimPublishedSelectors": [NEXT]}),
    ("ceres", entries("ceres2026"), "step 2 of 3", {"dkimSelector": "ceres2026", "dkimPublishedSelectors": [PREVIOUS]}),
    ("ceres2026", entries("ceres"), "step 3 of 3", {"dkimPublishedSelectors": []}),
])
def test_each_step_follows_from_where_the_stack_stands_and_says_why_it_publishes(signing, published, title, config):
    """The next step (publish, switch, retire) follows from the signing and published selectors, with its reason."""
    step = next_step(signing, published, "ceres2026", ttl=300, today=TODAY)
    assert step.title.startswith(title) and step.config == config


def test_other_published_selectors_keep_their_reasons():
    """A selector published for another reason, such as a spare key, stays published with its reason."""
    spare = PublishedSelector("spare", "a key kept for the backup relay")
    step = next_step("ceres", (spare, PublishedSelector("ceres2026")), "ceres2026", ttl=300, today=TODAY)
    assert step.config["dkimPublishedSelectors"] == [PREVIOUS, {"selector": "spare", "reason": "a key kept for the backup relay"}]


def test_the_switch_waits_for_the_ttl_and_verify_and_the_retirement_for_a_week():
    """The switch waits for the TTL and a green `mailctl verify`, retirement for 7 days; then the rotation is done."""
    switch = next_step("ceres", entries("ceres2026"), "ceres2026", ttl=300, today=TODAY)
    assert any("300 s" in condition for condition in switch.before)
    assert any("mailctl verify" in condition and "published, not signing" in condition for condition in switch.before)
    retire = next_step("ceres2026", entries("ceres"), "ceres2026", ttl=300, today=TODAY)
    assert any("7 days" in condition for condition in retire.before)
    assert next_step("ceres2026", (), "ceres2026", ttl=300, today=TODAY).done


def test_config_commands_set_objects_field_by_field_and_quote_for_the_shell():
    """The printed commands set each selector field by --path, not as a JSON string, and quote values for the shell."""
    assert config_commands("prod", "ceres-mail:dkimPublishedSelectors", [NEXT]) == [
        "pulumi config rm --stack prod ceres-mail:dkimPublishedSelectors",
        "pulumi config set --stack prod --path 'ceres-mail:dkimPublishedSelectors[0].selector' ceres2026",
        "pulumi config set --stack prod --path 'ceres-mail:dkimPublishedSelectors[0].reason' "
        "'next key, published 2026-11-26; signs from step 2 of the rotation'",
    ]


def test_write_takes_a_stack_file_through_the_three_steps_and_keeps_its_comments(tmp_path, capsys):
    """`--write` takes a stack file through all three steps, keeping its comments and other settings, then says done."""
    (tmp_path / "Pulumi.yaml").write_text((PROJECT_DIR / "Pulumi.yaml").read_text())
    original = (PROJECT_DIR / "Pulumi.staging.yaml").read_text()
    stack_file = tmp_path / "Pulumi.staging.yaml"
    stack_file.write_text(original)
    seen = []
    for _ in range(3):
        assert main(["-C", str(tmp_path), "dkim", "rotate", "--stack", "staging", "--to", "ceres2026", "--write"]) == 0
        config = yaml.safe_load(stack_file.read_text())["config"]
        seen.append((config.get("ceres-mail:dkimSelector", "ceres"), config["ceres-mail:dkimPublishedSelectors"]))
    assert [(signing, [e["selector"] for e in published]) for signing, published in seen] == [
        ("ceres", ["ceres2026"]), ("ceres2026", ["ceres"]), ("ceres2026", [])]
    assert all(e["reason"].startswith(("next key, published ", "previous key, signed until ")) for _, p in seen for e in p)
    assert stack_file.read_text().startswith(original.split("config:")[0]), "the comments stay"
    assert {k: v for k, v in config.items() if "dkim" not in k} == {k: v for k, v in stack_config("staging").items()}
    assert main(["-C", str(tmp_path), "dkim", "rotate", "--stack", "staging", "--to", "ceres2026"]) == 0
    assert "the rotation is complete" in capsys.readouterr().out


def test_without_write_nothing_changes_and_a_bad_selector_is_refused(tmp_path, capsys):
    """Without --write the commands are only printed and nothing changes; a --to that is no DNS label is refused."""
    (tmp_path / "Pulumi.yaml").write_text((PROJECT_DIR / "Pulumi.yaml").read_text())
    original = (PROJECT_DIR / "Pulumi.prod.yaml").read_text()
    (tmp_path / "Pulumi.prod.yaml").write_text(original)
    assert main(["-C", str(tmp_path), "dkim", "rotate", "--to", "ceres2026"]) == 0
    out = capsys.readouterr().out
    # set item by item: the CLI would store a JSON text as one string
    assert "pulumi config rm --stack prod ceres-mail:dkimPublishedSelectors\n" in out
    assert "pulumi config set --stack prod --path 'ceres-mail:dkimPublishedSelectors[0].selector' ceres2026\n" in out
    assert (tmp_path / "Pulumi.prod.yaml").read_text() == original
    assert main(["-C", str(tmp_path), "dkim", "rotate", "--to", "ceres_2026"]) == 2
    assert "--to: 'ceres_2026' is not a DNS label" in capsys.readouterr().err


def test_retiring_a_protected_key_says_to_unprotect_it_first(tmp_path, capsys):
    """Retiring a protected key prints `pulumi state unprotect` for it before the config change that removes it."""
    (tmp_path / "Pulumi.yaml").write_text((PROJECT_DIR / "Pulumi.yaml").read_text())
    prod = (PROJECT_DIR / "Pulumi.prod.yaml").read_text()
    (tmp_path / "Pulumi.prod.yaml").write_text(with_config(prod, "ceres-mail", {
        "dkimSelector": "ceres2026", "dkimPublishedSelectors": ["ceres"]}))
    assert main(["-C", str(tmp_path), "dkim", "rotate", "--to", "ceres2026"]) == 0
    out = capsys.readouterr().out
    assert "pulumi state unprotect --stack prod 'urn:pulumi:prod::ceres-mail::" in out
    assert out.index("state unprotect") < out.index("config rm")


def test_step_3_says_when_it_is_due_and_keeps_a_selector_published_for_another_reason():
    """Step 3 says when the old key may go (a week after the switch) and keeps a spare selector published."""
    spare = PublishedSelector("spare", "a key kept for the backup relay")
    previous = PublishedSelector(PREVIOUS["selector"], PREVIOUS["reason"])
    early = next_step("ceres2026", (previous, spare), "ceres2026", ttl=300, today=TODAY)
    assert early.title == "step 3 of 3: retire ceres (ceres2026 signs), due on 2026-12-03 (in 7 days)"
    assert early.config == {"dkimPublishedSelectors": [{"selector": "spare", "reason": "a key kept for the backup relay"}]}
    assert any("(2026-12-03 or later)" in condition for condition in early.before)
    late = next_step("ceres2026", (previous,), "ceres2026", ttl=300, today=datetime.date(2026, 12, 10))
    assert late.title.endswith("due since 2026-12-03") and late.config == {"dkimPublishedSelectors": []}


@pytest.mark.parametrize("signing, published, words", [
    ("ceres2026", (PublishedSelector(PREVIOUS["selector"], PREVIOUS["reason"]),),
     "the rotation to ceres2026 is not finished: step 3 still retires ceres (due on 2026-12-03)"),
    ("ceres", (PublishedSelector(NEXT["selector"], NEXT["reason"]),), "a rotation to ceres2026 is under way"),
])
def test_a_new_rotation_waits_until_the_last_one_is_finished(tmp_path, capsys, signing, published, words):
    """Rotating on to ceres2027 while ceres is still to be retired (or ceres2026 still to sign) would leave
    three keys and two half-done rotations: refused, naming the step that finishes the one under way."""
    (tmp_path / "Pulumi.yaml").write_text((PROJECT_DIR / "Pulumi.yaml").read_text())
    config = {**stack_config("staging"), "ceres-mail:dkimSelector": signing,
              "ceres-mail:dkimPublishedSelectors": [{"selector": e.selector, "reason": e.reason} for e in published]}
    (tmp_path / "Pulumi.staging.yaml").write_text(yaml.safe_dump({"config": config}))
    before = (tmp_path / "Pulumi.staging.yaml").read_text()
    assert main(["-C", str(tmp_path), "dkim", "rotate", "--stack", "staging", "--to", "ceres2027", "--write"]) == 2
    err = capsys.readouterr().err
    assert words in err and "mailctl dkim rotate --to" in err
    assert (tmp_path / "Pulumi.staging.yaml").read_text() == before, "nothing written"
