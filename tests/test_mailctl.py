"""`mailctl plan` as an operator runs it: output forms, exit codes, messages without tracebacks."""

from __future__ import annotations

import pytest

import json
import subprocess
import sys


from components.settings import SECRET_KEYS
from components.settings.schema import set_secret_command
from mailctl.cli import main
from tests.conftest import stack_config

MAILCTL = [sys.executable, "-m", "mailctl.cli"]


def run_mailctl(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*MAILCTL, *args], capture_output=True, text=True, cwd=cwd)


def test_plan_json_follows_the_documented_contract(capsys):
    """`mailctl plan --json` has the documented shape: project, stack, and each resource's URN, edges, inputs, options."""
    assert main(["plan", "--stack", "staging", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert set(plan) == {"project", "stack", "resources", "outputs", "policy"}
    assert (plan["project"], plan["stack"]) == ("ceres-mail", "staging")
    for resource in plan["resources"]:
        assert {"urn", "type", "name", "parent", "custom", "dependencies", "inputs", "options"} <= set(resource)
        assert {"protect", "retainOnDelete", "ignoreChanges", "importId"} <= set(resource["options"])
        assert resource["urn"].startswith("urn:pulumi:staging::ceres-mail::")


def test_plan_text_shows_the_tree_edges_and_secrets_redacted(capsys):
    """The text plan shows the tree, each resource's dependencies, secrets as [secret], unknowns as after apply."""
    assert main(["plan"]) == 0
    out = capsys.readouterr().out
    assert "ceres-mail plan: project ceres-mail, stack prod" in out
    assert "+ ceres-mail-dns  ceres-mail:mail:Dns (component)" in out
    assert "ceres-mail-ceres-secret <- " in out and "ceres-mail-server-install" in out
    assert "apiToken: [secret]" in out
    assert "(known after apply)" in out


def test_plan_mermaid_is_a_flowchart_with_edges(capsys):
    """`mailctl plan --mermaid` prints a Mermaid flowchart, the components as subgraphs, with the edges."""
    assert main(["plan", "--mermaid"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("flowchart LR\n")
    assert "subgraph" in out and " --> " in out


def test_bad_stack_exits_2_naming_keys_without_traceback(scratch_project):
    """A stack with bad values exits 2 with a line per bad key and nothing on stdout, never a traceback."""
    config = stack_config("prod")
    config["ceres-mail:domain"] = "not a domain"
    config["ceres-mail:smtpPort"] = 0
    project = scratch_project("broken", config)
    result = run_mailctl("-C", str(project), "plan", "--stack", "broken")
    assert result.returncode == 2
    assert "ceres-mail:domain:" in result.stderr and "ceres-mail:smtpPort:" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""


@pytest.mark.parametrize(
    "written, expected",
    [
        ({"dmarcPolicy": "reject"}, "ceres-mail:dmarcPolicy: is written `dmarcPolicy` without its namespace"),
        ({"ceres-mial:dmarcPolicy": "reject"}, "ceres-mial:dmarcPolicy: is in namespace 'ceres-mial', which nothing reads"),
        ({"ceres-mail:adminCidrs": "198.51.100.0/28"}, "ceres-mail:adminCidrs: '198.51.100.0/28' must be a list"),
    ],
)
def test_a_key_the_cli_would_ignore_or_misread_is_refused(scratch_project, written, expected):
    """The Pulumi CLI passes a key without namespace to no one and one under a misspelt namespace to no
    one who reads it: DMARC would silently stay p=none. The plan refuses both, naming the key."""
    project = scratch_project("typo", {**stack_config("staging"), **written})
    result = run_mailctl("-C", str(project), "plan", "--stack", "typo")
    assert result.returncode == 2, result.stdout[-500:]
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("key", sorted(SECRET_KEYS))
def test_a_secret_in_clear_in_the_stack_file_is_refused_without_showing_it(scratch_project, key):
    """Every secret in clear, declared secret in Pulumi.yaml or not, is refused by the plan with the command to use, never shown."""
    value = f"{key}-value-that-must-not-be-printed"
    project = scratch_project("leaky", {**stack_config("staging"), f"ceres-mail:{key}": value})
    result = run_mailctl("-C", str(project), "plan", "--stack", "leaky")
    assert result.returncode == 2
    assert f"ceres-mail:{key}: is in clear in Pulumi.leaky.yaml" in result.stderr, result.stderr
    assert f"`{set_secret_command(key)}" in result.stderr
    assert value not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


#: the commands that read a stack file without the program, each as an operator runs it on stack "leaky"
READERS_OF_THE_STACK_FILE = {
    "zone": ["zone", "--stack", "leaky"],
    "verify": ["verify", "--stack", "leaky"],
    "dkim": ["dkim", "rotate", "--stack", "leaky", "--to", "ceres2"],
}


@pytest.mark.parametrize("key", sorted(SECRET_KEYS))
@pytest.mark.parametrize("command", sorted(READERS_OF_THE_STACK_FILE))
def test_every_reader_of_the_stack_file_refuses_a_secret_in_clear(scratch_project, capsys, command, key):
    """zone, verify and dkim refuse a secret in clear as the plan does: exit 2, the key, the command to use, never the value."""
    value = f"{key}-value-that-must-not-be-printed"
    project = scratch_project("leaky", {**stack_config("staging"), f"ceres-mail:{key}": value})
    assert main(["-C", str(project), *READERS_OF_THE_STACK_FILE[command]]) == 2
    said = capsys.readouterr()
    assert f"ceres-mail:{key}: is in clear in Pulumi.leaky.yaml" in said.err, said.err
    assert f"`{set_secret_command(key)}`" in said.err
    assert value not in said.err + said.out


def test_the_text_plan_shows_what_an_operator_checks(scratch_project):
    """Deep values by their path, none cut off (the IPv6 gateway), and the inputs of CERES's rollout patch."""
    project = scratch_project("rollout", {**stack_config("prod"), "ceres-mail:ceresDeployment": "ceres"})
    text = run_mailctl("-C", str(project), "plan", "--stack", "rollout").stdout
    assert "ipConfigs[0].ipv6.gateway: 2001:db8:25::1" in text
    assert "ipConfigs[0].ipv4.address: 203.0.113.25/24" in text
    patch = text[text.index("ceres-mail-ceres-rollout"):].split("\n    + ", 1)[0]
    assert '"name": "ceres", "namespace": "ceres"' in patch
    assert '"ceres-mail/smtp-checksum": "[secret]"' in patch, "derived from the password, so a secret too"


def test_unknown_stack_is_a_clear_error(project_dir):
    """An unknown stack exits 2 with an error listing the stacks there are, not a traceback."""
    result = run_mailctl("plan", "--stack", "nosuch")
    assert result.returncode == 2
    assert "no stack file Pulumi.nosuch.yaml" in result.stderr and "prod, staging" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_operators_new_stack_file_works_the_same_way(scratch_project):
    """Any Pulumi.<stack>.yaml an operator adds is planned like the committed ones."""
    config = stack_config("staging")
    config["ceres-mail:domain"] = "mail-test.example.org"
    project = scratch_project("qa", config)
    result = run_mailctl("-C", str(project), "plan", "--stack", "qa", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outputs"]["mailHost"] == "mail.mail-test.example.org"


def test_yaml_that_is_not_yaml_is_a_clear_error(tmp_path, project_dir):
    """A stack file that is not valid YAML exits 2 with an error saying so, not a traceback."""
    (tmp_path / "Pulumi.yaml").write_text((project_dir / "Pulumi.yaml").read_text())
    (tmp_path / "Pulumi.odd.yaml").write_text("config: [unclosed\n")
    result = run_mailctl("-C", str(tmp_path), "plan", "--stack", "odd")
    assert result.returncode == 2 and "Pulumi.odd.yaml is not valid YAML" in result.stderr
    assert "Traceback" not in result.stderr


def test_pulumi_yaml_the_readme_reference_and_synopsis_are_what_make_docs_writes(project_dir):
    """Every key's type, default and description live in the settings schema only, and every command and
    option of mailctl in its parser only: run `make docs` after changing one there, and commit what it
    writes."""
    from mailctl.config_reference import SYNOPSIS_BEGIN, SYNOPSIS_END, written_files

    for path, text in written_files(project_dir).items():
        assert path.read_text() == text, f"{path.name} differs from what `make docs` writes: run `make docs`"
    readme = (project_dir / "README.md").read_text()
    synopsis = readme[readme.index(SYNOPSIS_BEGIN):readme.index(SYNOPSIS_END)]
    verify = synopsis[synopsis.index("mailctl verify "):synopsis.index("mailctl policy ")]
    assert "mailctl backup status " in synopsis and "mailctl backup restore " in synopsis
    assert all(flag in verify for flag in ("--ssh-key FILE", "--ssh-user", "--known-hosts FILE", "--ssh-host"))


def test_the_synopsis_shows_every_command_and_option_of_the_parser():
    """An option added to a command appears in its line, with its value; a command added, in a line of its
    own; a required option without brackets, a choice between options as one bracket."""
    from mailctl.cli import build_parser
    from mailctl.config_reference import render_synopsis

    parser = build_parser()
    commands = next(action for action in parser._actions if isinstance(action.choices, dict))
    commands.choices["zone"].add_argument("--serial", metavar="N")
    extra = commands.add_parser("report")
    extra.add_argument("--since", required=True, metavar="DAY")
    synopsis = render_synopsis(parser)
    assert "[--out DIR] [--serial N]" in synopsis
    assert ".venv/bin/mailctl report --since DAY\n" in synopsis
    assert "[--json | --mermaid]" in synopsis and "[--stack STACK | --domain DOMAIN]" in synopsis
    assert "mailctl policy PLAN.json [--state EXPORT.json]" in synopsis
    assert all(len(line) <= 107 for line in synopsis.splitlines())


def test_make_docs_puts_back_a_default_changed_by_hand(tmp_path, project_dir):
    """A default edited in Pulumi.yaml alone (the CLI would apply it, the program would not) is rewritten
    from the schema; the project's own lines above the config block stay."""
    for name in ("Pulumi.yaml", "README.md"):
        (tmp_path / name).write_text((project_dir / name).read_text())
    drifted = (project_dir / "Pulumi.yaml").read_text().replace("    default: 3600\n", "    default: 300\n")
    (tmp_path / "Pulumi.yaml").write_text(drifted.replace("name: ceres-mail\n", "name: ceres-mail\n# by hand\n"))
    result = run_mailctl("-C", str(tmp_path), "config-reference", "--write")
    assert result.returncode == 0 and result.stdout.strip() == "wrote Pulumi.yaml", result.stdout + result.stderr
    written = (tmp_path / "Pulumi.yaml").read_text()
    assert "# by hand\n" in written
    assert written.replace("# by hand\n", "") == (project_dir / "Pulumi.yaml").read_text()
    again = run_mailctl("-C", str(tmp_path), "config-reference", "--write")
    assert again.stdout.strip() == "Pulumi.yaml and README.md already up to date"


def test_readme_starts_with_its_title_then_the_two_commands(project_dir):
    """The title first, then `make plan` and `make test` (the first code block), each with its line saying
    what it does, and `make test-fast` named next to `make test`, all before the first section."""
    text = (project_dir / "README.md").read_text()
    assert text.startswith("# ceres-mail\n")
    opening = text[:text.index("\n## ")]
    code = [line.strip() for line in opening.splitlines() if line.startswith("    ")]
    assert code[:2] == ["make plan", "make test"]
    said = {item.split("`")[1]: " ".join(item.split()) for item in opening.split("\n- ")[1:]}
    assert "creates `.venv`" in said["make plan"] and "no cloud, credentials or Pulumi CLI" in said["make plan"]
    assert "installs everything the tests need" in said["make test"] and "runs every test" in said["make test"]
    assert "`make test-fast`" in said["make test"]


# --- mailctl zone -------------------------------------------------------------------------------------


def test_zone_is_the_stacks_records_in_bind_form(capsys):
    """`mailctl zone` prints every record of the stack, commented, as a zone file a DNS library reads back the same."""
    import dns.zone

    from components.builders.dns_records import build_records
    from mailctl.zone import stack_settings
    from tests.conftest import PROJECT_DIR

    assert main(["zone", "--stack", "prod"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("; zone example.com of stack prod")
    zone = dns.zone.from_text(text, origin="example.com", relativize=False)
    served = {(name.to_text(omit_final_dot=True), rdataset.rdtype, rdata.to_text())
              for name, node in zone.nodes.items() for rdataset in node for rdata in rdataset}
    for record in build_records(stack_settings(PROJECT_DIR, "prod").dns_inputs):
        assert (record.name, record.parsed().rdtype, record.parsed().to_text()) in served, record
    assert ";Required: mail for example.com is delivered to mail.example.com" in text


def test_zone_is_byte_identical_across_runs(capsys):
    """`mailctl zone` prints the same bytes on every run, so two runs differ only when the records do."""
    main(["zone", "--stack", "staging"])
    first = capsys.readouterr().out
    main(["zone", "--stack", "staging"])
    assert capsys.readouterr().out == first


def test_zone_reverse_gives_the_ptr_lines(capsys):
    """`mailctl zone --reverse` prints the PTR lines to hand to the IP provider."""
    assert main(["zone", "--reverse"]) == 0
    out = capsys.readouterr().out
    assert "25.113.0.203.in-addr.arpa. 3600 IN PTR mail.example.com." in out


def test_zone_with_dkim_key_includes_the_record(tmp_path, capsys):
    """Given the DKIM public key, `mailctl zone` includes the DKIM TXT record (RFC 6376 3.6.1)."""
    from tests.dns_fixtures import dkim_key_pair

    pem = tmp_path / "dkim.pem"
    pem.write_text(dkim_key_pair()[1])
    assert main(["zone", "--dkim-public-key", str(pem)]) == 0
    assert 'ceres._domainkey 3600 IN TXT "v=DKIM1; k=rsa; p=' in capsys.readouterr().out


def test_zone_of_an_unknown_domain_is_a_clear_error():
    """`mailctl zone` for a domain the stack does not serve exits 2, saying it is not one of its mail domains."""
    result = run_mailctl("zone", "--domain", "example.org")
    assert result.returncode == 2 and "example.org is not a mail domain of stack prod" in result.stderr


#: what `pulumi stack output --json` gives of a stack with dnssec on and two mail domains
DS_OUTPUTS = {
    "mailHost": "mail.example.com",
    "dsRecords": {
        "example.com": {"ds": "example.com. 3600 IN DS 2371 13 2 32996839A6D808AFE3EB4A795A0E6A7A39A76FC52FF228B22B76F6D63826F2B9",
                        "keyTag": 2371, "algorithm": 13, "digestType": 2,
                        "digest": "32996839A6D808AFE3EB4A795A0E6A7A39A76FC52FF228B22B76F6D63826F2B9"},
        "example.org": {"ds": "example.org. 3600 IN DS 61053 13 2 E7F6A9CD532DEBD060A59DDCDB5D23498AAF7371F5D5BB7B717BFC818C5D7CFB",
                        "keyTag": 61053, "algorithm": 13, "digestType": 2,
                        "digest": "E7F6A9CD532DEBD060A59DDCDB5D23498AAF7371F5D5BB7B717BFC818C5D7CFB"},
    },
}


@pytest.fixture
def signed_stack(scratch_project, tmp_path):
    """(project dir, outputs file) of prod with dnssec on and a second mail domain, its outputs as after an up."""
    config = stack_config("prod", {"ceres-mail:dnssec": True,
                                   "ceres-mail:extraDomains": ["example.org=11111111111111111111111111111111"]})
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(DS_OUTPUTS))
    return scratch_project("prod", config), outputs


def test_zone_ds_prints_each_domains_ds_for_its_registrar_and_as_zone_file_lines(signed_stack, capsys):
    """`mailctl zone --ds` prints each mail domain's DS as a registrar's form asks for it and as a zone-file line."""
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype

    project, outputs = signed_stack
    assert main(["-C", str(project), "zone", "--ds", str(outputs)]) == 0
    text = capsys.readouterr().out
    assert "Cloudflare Registrar publishes it by itself" in text
    assert ("example.com\n  Key tag      2371\n  Algorithm    13 (ECDSAP256SHA256)\n  Digest type  2 (SHA-256)\n"
            "  Digest       32996839A6D808AFE3EB4A795A0E6A7A39A76FC52FF228B22B76F6D63826F2B9\n") in text
    assert text.index("\nexample.com\n") < text.index("\nexample.org\n")
    lines = [line for line in text.splitlines() if " IN DS " in line]
    assert [line.split()[0] for line in lines] == ["example.com.", "example.org."]
    for line, entry in zip(lines, DS_OUTPUTS["dsRecords"].values()):
        ds = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.DS, line.split(" IN DS ")[1])
        assert (ds.key_tag, ds.algorithm, ds.digest_type, ds.digest.hex().upper()) == (
            entry["keyTag"], entry["algorithm"], entry["digestType"], entry["digest"])
    assert main(["-C", str(project), "zone", "--ds", str(outputs), "--domain", "example.org"]) == 0
    assert "example.com" not in capsys.readouterr().out


@pytest.mark.parametrize("outputs, words", [
    ({"mailHost": "mail.example.com"}, "holds no dsRecords: give the JSON of `pulumi stack output --json --stack prod`"),
    ({"dsRecords": {"example.com": DS_OUTPUTS["dsRecords"]["example.com"]}},
     "dsRecords in - has no DS for example.org: `pulumi up --stack prod` signs its zone"),
    ({"dsRecords": {**DS_OUTPUTS["dsRecords"], "example.org": {"keyTag": 61053}}},
     "the DS of example.org has no algorithm, digestType, digest"),
])
def test_zone_ds_without_a_ds_says_what_to_run(signed_stack, outputs, words):
    """Outputs from before the up that signed the zones, or that lack a domain, exit 2 saying what to run, no traceback."""
    project, _ = signed_stack
    result = subprocess.run([*MAILCTL, "-C", str(project), "zone", "--ds", "-"], input=json.dumps(outputs),
                            capture_output=True, text=True)
    assert result.returncode == 2 and words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_zone_ds_of_a_stack_with_dnssec_off_names_the_key(tmp_path):
    """A stack whose zones are unsigned has no DS to print: exit 2, naming the key that turns signing on."""
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(DS_OUTPUTS))
    result = run_mailctl("zone", "--ds", str(outputs))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "stack prod has dnssec off" in result.stderr and "pulumi config set dnssec true --stack prod" in result.stderr
