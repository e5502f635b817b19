"""The GitHub workflows: valid by actionlint, and doing what pull requests and deploys need."""

from __future__ import annotations

import json
import re
import socket
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from tests import machine_cache
from tests.conftest import PROJECT_DIR

WORKFLOWS = PROJECT_DIR / ".github" / "workflows"
ACTIONLINT = machine_cache.actionlint()


def workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


@pytest.mark.judge
def test_actionlint_accepts_every_workflow():
    """actionlint finds nothing wrong in any of the workflows."""
    if not ACTIONLINT.exists():
        pytest.skip("actionlint is not built (make test builds it)")
    result = subprocess.run([str(ACTIONLINT), "-color=false", *map(str, sorted(WORKFLOWS.glob("*.yml")))],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.judge
def test_actionlint_refuses_a_broken_workflow(tmp_path):
    """actionlint refuses a broken workflow, so its passing ours means something."""
    if not ACTIONLINT.exists():
        pytest.skip("actionlint is not built (make test builds it)")
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ github.nope }}\n")
    assert subprocess.run([str(ACTIONLINT), str(broken)], capture_output=True).returncode != 0


def test_pull_requests_test_diff_and_preview_every_stack():
    """A pull request runs the tests, diffs the plans of staging and prod, and comments a preview under the policy."""
    jobs = workflow("pull-request.yml")["jobs"]
    assert any(".ci/run" in step.get("run", "") for step in jobs["test"]["steps"])
    assert jobs["plan-diff"]["strategy"]["matrix"]["stack"] == ["staging", "prod"]
    assert any("--diff base-plan.json" in step.get("run", "") for step in jobs["plan-diff"]["steps"])
    preview = next(s for s in jobs["preview"]["steps"] if s.get("uses", "").startswith("pulumi/actions@"))
    assert preview["with"]["command"] == "preview" and preview["with"]["policyPacks"] == "policy"
    assert preview["with"]["comment-on-pr"] is True


def test_a_plan_that_fails_its_policy_is_still_commented_then_fails_the_job(tmp_path):
    """The plans step runs as GitHub runs it (`bash -e`), with a mailctl whose --diff exits 1 (a mandatory
    violation): the comment is written in full, the status is handed on, and the last step fails on it."""
    steps = workflow("pull-request.yml")["jobs"]["plan-diff"]["steps"]
    plans = next(s for s in steps if s.get("id") == "plans")
    for tree in ("base", "head"):
        (tmp_path / tree / ".venv" / "bin").mkdir(parents=True)
        mailctl = tmp_path / tree / ".venv" / "bin" / "mailctl"
        mailctl.write_text('#!/bin/sh\ncase "$*" in *--diff*) echo "[mandatory] dns-record-not-proxied: ..."; exit 1;; '
                           '*--mermaid*) echo "flowchart LR";; *) echo "{}";; esac\n')
        mailctl.chmod(0o755)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "make").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "make").chmod(0o755)
    output = tmp_path / "github-output"
    result = subprocess.run(["bash", "-e", "-c", plans["run"]], cwd=tmp_path, capture_output=True, text=True,
                            env={"PATH": f"{fake_bin}:/usr/bin:/bin", "STACK": "prod", "GITHUB_OUTPUT": str(output)})
    assert result.returncode == 0, result.stderr
    comment = (tmp_path / "comment.md").read_text()
    assert "[mandatory] dns-record-not-proxied" in comment and "flowchart LR" in comment
    assert output.read_text() == "status=1\n"
    comment_step = next(i for i, s in enumerate(steps) if "gh pr comment" in s.get("run", ""))
    fail_step = next(i for i, s in enumerate(steps) if s.get("if") == "steps.plans.outputs.status != '0'")
    assert comment_step < fail_step and "exit 1" in steps[fail_step]["run"]


def test_deploys_go_to_staging_then_to_a_protected_prod():
    """Deploys run `pulumi up` on staging first, then on prod behind the protected production environment."""
    jobs = workflow("deploy.yml")["jobs"]
    assert jobs["prod"]["needs"] == "staging" and jobs["prod"]["environment"] == "production"
    for job in jobs.values():
        up = next(s for s in job["steps"] if s.get("uses", "").startswith("pulumi/actions@"))
        assert up["with"]["command"] == "up"


def test_credentials_come_from_the_secret_store_only():
    """The Pulumi access token and passphrase come from the secret store, never written into a workflow."""
    for path in WORKFLOWS.glob("*.yml"):
        text = path.read_text()
        for line in text.splitlines():
            if "PULUMI_ACCESS_TOKEN:" in line or "PASSPHRASE:" in line:
                assert "${{ secrets." in line, f"{path.name}: {line.strip()}"


# --- Deploying from GitHub Actions: where the jobs run, the state backend, SSH to the Proxmox node ------

RUNS_ON = """${{ fromJSON(vars.DEPLOY_RUNS_ON || '"ubuntu-24.04"') }}"""
CREDENTIALS = ("PULUMI_ACCESS_TOKEN", "PULUMI_CONFIG_PASSPHRASE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
               "PROXMOX_SSH_KEY")


def deploy_jobs() -> dict:
    return workflow("deploy.yml")["jobs"]


def step_index(steps: list, predicate) -> int:
    found = [i for i, step in enumerate(steps) if predicate(step)]
    assert len(found) == 1, found
    return found[0]


def is_pulumi(step: dict) -> bool:
    return step.get("uses", "").startswith("pulumi/actions@")


def is_backend(step: dict) -> bool:
    return step.get("env", {}).get("PULUMI_BACKEND_URL") == "${{ vars.PULUMI_BACKEND_URL }}"


def is_proxmox_ssh(step: dict) -> bool:
    return "PROXMOX_SSH_KEY" in step.get("env", {})


def all_steps():
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for name, job in workflow(path.name)["jobs"].items():
            for step in job["steps"]:
                yield f"{path.name}:{name}", step


def run_step(step: dict, env: dict, cwd) -> subprocess.CompletedProcess:
    """A `run:` step as GitHub runs it on Linux (`bash -e`), with only the environment given."""
    return subprocess.run(["bash", "--noprofile", "--norc", "-e", "-c", step["run"]], cwd=cwd, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", **env}, timeout=60)


def test_jobs_that_reach_the_network_run_where_the_variable_says():
    """The deploys and the preview talk to Proxmox, the cluster, Keycloak and the backend: they run on
    `vars.DEPLOY_RUNS_ON` (a self-hosted runner inside the network), a GitHub-hosted runner when unset.
    The test and plan-diff jobs are offline and stay on a hosted runner."""
    jobs = deploy_jobs()
    assert set(jobs) == {"staging", "prod"}
    assert all(job["runs-on"] == RUNS_ON for job in jobs.values())
    pr = workflow("pull-request.yml")["jobs"]
    assert pr["preview"]["runs-on"] == RUNS_ON
    assert pr["test"]["runs-on"] == pr["plan-diff"]["runs-on"] == "ubuntu-24.04"
    default = re.fullmatch(r"\$\{\{ fromJSON\(vars\.DEPLOY_RUNS_ON \|\| '(.*)'\) \}\}", RUNS_ON).group(1)
    assert json.loads(default) == "ubuntu-24.04"


def test_each_deploy_loads_the_node_key_into_an_agent_and_pins_its_host_key_before_up():
    """Staging and prod deploy alike: node key in an agent and host key pinned before up, the agent stopped after."""
    jobs = deploy_jobs()
    assert jobs["prod"]["needs"] == "staging" and jobs["prod"]["environment"] == "production"
    assert jobs["staging"]["environment"] == "staging"
    for name, job in jobs.items():
        steps = job["steps"]
        ssh, up = step_index(steps, is_proxmox_ssh), step_index(steps, is_pulumi)
        stop = step_index(steps, lambda s: "ssh-agent -k" in s.get("run", "") and s.get("if") == "always()")
        assert ssh < up < stop, name
        assert steps[ssh]["env"] == {"PROXMOX_SSH_KEY": "${{ secrets.PROXMOX_SSH_KEY }}",
                                     "PROXMOX_SSH_KNOWN_HOSTS": "${{ vars.PROXMOX_SSH_KNOWN_HOSTS }}"}
        script = steps[ssh]["run"]
        assert "ssh-add -q - <<<" in script and "~/.ssh/known_hosts" in script and "$GITHUB_ENV" in script
        assert steps[up]["with"]["command"] == "up" and steps[up]["with"]["stack-name"] == name
    assert jobs["prod"]["steps"] == [
        step if not is_pulumi(step) else {**step, "with": {**step["with"], "stack-name": "prod"}}
        for step in jobs["staging"]["steps"]
    ], "staging and prod run the same steps"


def test_host_keys_are_never_trusted_blindly():
    """No step turns host key checking off or trusts whatever key answers (ssh-keyscan at deploy time)."""
    for path in WORKFLOWS.glob("*.yml"):
        text = path.read_text()
        for forbidden in ("StrictHostKeyChecking=no", "StrictHostKeyChecking no", "accept-new",
                          "UserKnownHostsFile=/dev/null", "insecure: true"):
            assert forbidden not in text, f"{path.name}: {forbidden}"
    for where, step in all_steps():
        for line in step.get("run", "").splitlines():
            command = line.strip()
            assert not command.startswith("ssh-keyscan") and "$(ssh-keyscan" not in command, f"{where}: {line}"


def test_no_step_prints_a_secret():
    """Secrets reach scripts only through `env:` (never `${{ secrets.… }}` inside a script, where the value
    would be pasted into the script itself); no shell tracing; the key is only tested and fed to ssh-add."""
    for where, step in all_steps():
        script = step.get("run", "")
        assert "${{ secrets." not in script, where
        assert not re.search(r"set -[a-z]*x|set -o xtrace|bash -x", script), where
        for line in script.splitlines():
            if "PROXMOX_SSH_KEY" in line and "$" in line.replace("${{", ""):
                uses = re.findall(r"\$\{?PROXMOX_SSH_KEY\b", line)
                assert not uses or "[ -z " in line or "ssh-add -q - <<<" in line, f"{where}: {line}"


def test_credentials_reach_steps_from_the_secret_store_under_their_own_name():
    """Every credential a step gets comes from the secret store under its own name."""
    for where, step in all_steps():
        for key, value in step.get("env", {}).items():
            if key in CREDENTIALS:
                assert value == f"${{{{ secrets.{key} }}}}", f"{where}: {key}"


def test_the_backend_is_pulumi_cloud_or_the_s3_bucket_of_the_variable_for_every_pulumi_step():
    """Every `pulumi` step logs in to `vars.PULUMI_BACKEND_URL` (the action logs in to Pulumi Cloud when it
    is empty), with the AWS keys for an s3 backend, after the step that checks the choice; the preview
    runs the deploy's very check."""
    backend_steps = []
    for path in ("deploy.yml", "pull-request.yml"):
        for name, job in workflow(path)["jobs"].items():
            steps = job["steps"]
            if not any(is_pulumi(step) for step in steps):
                continue
            check, pulumi = step_index(steps, is_backend), step_index(steps, is_pulumi)
            assert check < pulumi, f"{path}:{name}"
            assert steps[pulumi]["with"]["cloud-url"] == "${{ vars.PULUMI_BACKEND_URL }}"
            assert {"PULUMI_ACCESS_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(steps[pulumi]["env"])
            backend_steps.append(steps[check])
        assert backend_steps, path
    assert all(step == backend_steps[0] for step in backend_steps)
    assert not any(is_proxmox_ssh(step) for step in workflow("pull-request.yml")["jobs"]["preview"]["steps"]), \
        "a preview uploads nothing: it gets no SSH key"


@pytest.mark.parametrize("env, status, says", [
    ({"PULUMI_ACCESS_TOKEN": "pul-0123secret"}, 0, "state backend: Pulumi Cloud"),
    ({}, 1, "::error title=PULUMI_ACCESS_TOKEN is not set::the secret PULUMI_ACCESS_TOKEN is empty"),
    ({"PULUMI_BACKEND_URL": "s3://ceres-state/mail?region=eu-central-1"}, 0,
     "state backend: s3://ceres-state/mail?region=eu-central-1 (self-managed, the runner's own AWS credentials)"),
    ({"PULUMI_BACKEND_URL": "s3://ceres-state", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
      "AWS_SECRET_ACCESS_KEY": "aws-0123secret"}, 0, "(self-managed, AWS keys from the secret store)"),
    ({"PULUMI_BACKEND_URL": "s3://ceres-state", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE"}, 1,
     "::error title=AWS_SECRET_ACCESS_KEY is not set::"),
    ({"PULUMI_BACKEND_URL": "s3://ceres-state", "AWS_SECRET_ACCESS_KEY": "aws-0123secret"}, 1,
     "::error title=AWS_ACCESS_KEY_ID is not set::"),
    ({"PULUMI_BACKEND_URL": "file:///var/lib/state", "PULUMI_ACCESS_TOKEN": "pul-0123secret"}, 1,
     "::error title=PULUMI_BACKEND_URL is not a backend this workflow logs in to::"),
    ({"PULUMI_BACKEND_URL": "s3://"}, 1, "::error title=PULUMI_BACKEND_URL"),
], ids=["cloud", "cloud-no-token", "s3-runner-role", "s3-keys", "s3-no-secret-key", "s3-no-key-id", "file", "s3-no-bucket"])
def test_the_backend_check_says_which_backend_or_names_what_is_missing(tmp_path, env, status, says):
    """The backend check says which state backend is used, or fails naming what is missing, and prints no secret."""
    step = deploy_jobs()["staging"]["steps"][step_index(deploy_jobs()["staging"]["steps"], is_backend)]
    # as GitHub sets them: a secret or variable that is not set is an empty string
    given = {name: "" for name in step["env"]} | env
    result = run_step(step, given, tmp_path)
    assert result.returncode == status, result.stdout + result.stderr
    assert says in result.stdout
    assert "0123secret" not in result.stdout + result.stderr


# The Proxmox SSH step, run for real: a throwaway client key, a pinned host key, a real ssh-agent, and the
# node's SSH port stood in for by a listening socket on 127.0.0.1

def ssh_keygen(path, comment: str) -> tuple[str, str]:
    """A new ed25519 key pair: (private key file text, public key line)."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return path.read_text(), path.with_suffix(".pub").read_text().strip()


def fingerprint(public_key_file) -> str:
    return subprocess.run(["ssh-keygen", "-l", "-f", str(public_key_file)], capture_output=True, text=True,
                          check=True).stdout.split()[1]


@pytest.fixture
def node(tmp_path):
    """A listening socket on 127.0.0.1 for the node's SSH port, and the node's host key."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    keys = tmp_path / "keys"
    keys.mkdir()
    _, host_public = ssh_keygen(keys / "host", "")
    key_type, key = host_public.split()[:2]
    yield {"port": listener.getsockname()[1], "known_hosts": f"[127.0.0.1]:{listener.getsockname()[1]} {key_type} {key}"}
    listener.close()


@pytest.fixture
def runner(tmp_path):
    """A runner's HOME, RUNNER_TEMP and GITHUB_ENV; stops any agent a test left (by its pid)."""
    home, temp = tmp_path / "home", tmp_path / "runner-temp"
    home.mkdir()
    temp.mkdir()
    github_env = tmp_path / "github-env"
    github_env.touch()
    env = {"HOME": str(home), "RUNNER_TEMP": str(temp), "GITHUB_ENV": str(github_env)}
    yield env
    exported = dict(line.split("=", 1) for line in github_env.read_text().splitlines() if "=" in line)
    if "SSH_AGENT_PID" in exported:
        subprocess.run(["kill", exported["SSH_AGENT_PID"]], capture_output=True)


def proxmox_ssh_step() -> dict:
    steps = deploy_jobs()["staging"]["steps"]
    return steps[step_index(steps, is_proxmox_ssh)]


def stop_agent_step() -> dict:
    steps = deploy_jobs()["staging"]["steps"]
    return steps[step_index(steps, lambda s: s.get("if") == "always()")]


def test_the_ssh_step_puts_the_key_in_an_agent_and_pins_the_node(tmp_path, node, runner):
    """The SSH step pins the node's host key and keeps the key only in an agent, never on disk; the last step stops it."""
    private, public = ssh_keygen(tmp_path / "keys" / "deploy", "ceres-deploy@ci")
    known_hosts = f"# pve-lab\n{node['known_hosts']}\n"
    result = run_step(proxmox_ssh_step(), {**runner, "PROXMOX_SSH_KEY": private,
                                           "PROXMOX_SSH_KNOWN_HOSTS": known_hosts}, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    body = "".join(private.splitlines()[1:-1])
    assert body[:40] not in output.replace("\n", "") and "PRIVATE KEY" not in output

    # known_hosts is exactly the pinned lines, private to the runner's user; ssh finds the node in it
    home = Path(runner["HOME"])
    assert (home / ".ssh" / "known_hosts").read_text() == known_hosts + "\n"
    assert stat.S_IMODE((home / ".ssh").stat().st_mode) == 0o700
    assert stat.S_IMODE((home / ".ssh" / "known_hosts").stat().st_mode) == 0o600
    assert subprocess.run(["ssh-keygen", "-F", f"[127.0.0.1]:{node['port']}", "-f",
                           str(home / ".ssh" / "known_hosts")], capture_output=True).returncode == 0
    assert fingerprint(tmp_path / "keys" / "host.pub") in result.stdout
    assert f"node SSH answers at 127.0.0.1 port {node['port']}" in result.stdout

    # the later steps see the agent, which holds the key and signs with it; nothing else kept the key
    exported = dict(line.split("=", 1) for line in Path(runner["GITHUB_ENV"]).read_text().splitlines())
    assert set(exported) == {"SSH_AUTH_SOCK", "SSH_AGENT_PID"}
    assert exported["SSH_AUTH_SOCK"].startswith(runner["RUNNER_TEMP"])
    agent = {"PATH": "/usr/bin:/bin", "HOME": runner["HOME"], "SSH_AUTH_SOCK": exported["SSH_AUTH_SOCK"]}
    listed = subprocess.run(["ssh-add", "-l"], env=agent, capture_output=True, text=True)
    assert listed.returncode == 0 and fingerprint(tmp_path / "keys" / "deploy.pub") in listed.stdout
    assert "ceres-deploy@ci" in listed.stdout and len(listed.stdout.splitlines()) == 1
    message = tmp_path / "message"
    message.write_text("snippet upload\n")
    signed = subprocess.run(["ssh-keygen", "-Y", "sign", "-n", "file", "-f", str(tmp_path / "keys" / "deploy.pub"),
                             str(message)], env=agent, capture_output=True, text=True)
    assert signed.returncode == 0, signed.stderr
    for path in (home.rglob("*"), Path(runner["RUNNER_TEMP"]).rglob("*")):
        for file in path:
            if file.is_file():
                assert body[:40] not in file.read_text(errors="replace").replace("\n", ""), file

    # the last step stops the agent: the key leaves memory with it
    stopped = run_step(stop_agent_step(), {**runner, **exported}, tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    assert subprocess.run(["ssh-add", "-l"], env=agent, capture_output=True).returncode == 2  # no agent


def test_the_stop_step_does_nothing_when_no_agent_was_started(tmp_path, runner):
    """The step that stops the agent succeeds when none was started."""
    assert run_step(stop_agent_step(), runner, tmp_path).returncode == 0


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("case, says", [
    ("no key", "::error title=PROXMOX_SSH_KEY is not set::the secret PROXMOX_SSH_KEY is empty"),
    ("no known hosts", "::error title=PROXMOX_SSH_KNOWN_HOSTS is not set::the variable PROXMOX_SSH_KNOWN_HOSTS"),
    ("comments only", "::error title=PROXMOX_SSH_KNOWN_HOSTS is not known_hosts lines::"),
    ("a bad line", "::error title=PROXMOX_SSH_KNOWN_HOSTS is not known_hosts lines::"),
    ("unreachable node", "::error title=Proxmox node unreachable::127.0.0.1 port"),
    ("not a key", "::error title=PROXMOX_SSH_KEY is not a key ssh-add loads::"),
    ("a passphrase", "::error title=PROXMOX_SSH_KEY is not a key ssh-add loads::"),
])
def test_the_ssh_step_fails_naming_what_is_wrong_and_leaves_no_agent(tmp_path, node, runner, case, says):
    """A bad key, bad known_hosts or unreachable node fails the SSH step with one error naming it, leaving no agent."""
    private, _ = ssh_keygen(tmp_path / "keys" / "deploy", "ceres-deploy@ci")
    env = {**runner, "PROXMOX_SSH_KEY": private, "PROXMOX_SSH_KNOWN_HOSTS": node["known_hosts"]}
    if case == "no key":
        env["PROXMOX_SSH_KEY"] = ""
    elif case == "no known hosts":
        env["PROXMOX_SSH_KNOWN_HOSTS"] = ""
    elif case == "comments only":
        env["PROXMOX_SSH_KNOWN_HOSTS"] = "# the node's key goes here\n"
    elif case == "a bad line":
        env["PROXMOX_SSH_KNOWN_HOSTS"] = node["known_hosts"] + "\n127.0.0.1 ssh-ed25519\n"
    elif case == "unreachable node":
        env["PROXMOX_SSH_KNOWN_HOSTS"] = node["known_hosts"].replace(f":{node['port']} ", f":{unused_port()} ")
    elif case == "not a key":
        env["PROXMOX_SSH_KEY"] = "ssh-ed25519 AAAA this is a public key, not the private one"
    elif case == "a passphrase":
        subprocess.run(["ssh-keygen", "-q", "-p", "-N", "hunter2-passphrase", "-f", str(tmp_path / "keys" / "deploy")],
                       check=True, capture_output=True)
        env["PROXMOX_SSH_KEY"] = (tmp_path / "keys" / "deploy").read_text()
    result = subprocess.run(["setsid", "bash", "--noprofile", "--norc", "-e", "-c", proxmox_ssh_step()["run"]],
                            cwd=tmp_path, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", **env})
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if line.startswith("::error")]
    assert len(errors) == 1 and errors[0].startswith(says), result.stdout
    if case == "unreachable node":
        assert "DEPLOY_RUNS_ON" in errors[0]
    # no agent for the next steps, and none left running with the socket
    assert Path(runner["GITHUB_ENV"]).read_text() == ""
    assert not (Path(runner["RUNNER_TEMP"]) / "ssh-agent.sock").exists()
    assert "PRIVATE KEY" not in result.stdout + result.stderr


def test_ci_pins_the_kill_tests_seed_and_a_schedule_tries_new_ones():
    """CI replays: .ci/run sets CERES_MAIL_KILL_SEED unless given one. The scheduled workflow draws a fresh
    seed for the kill test and, when it fails, says which seed to replay."""
    ci = (PROJECT_DIR / ".ci" / "run").read_text()
    assert re.search(r'^export CERES_MAIL_KILL_SEED="\$\{CERES_MAIL_KILL_SEED:-\d+\}"$', ci, re.M), ci
    kill = workflow("kill-seeds.yml")
    assert "schedule" in kill[True] and "workflow_dispatch" in kill[True]  # YAML reads the key `on` as True
    steps = kill["jobs"]["kill-test"]["steps"]
    run = next(s for s in steps if "CERES_MAIL_KILL_SEED" in s.get("run", ""))
    assert "tests/test_mail_host.py" in run["run"] and run["env"]["SEED"] == "${{ steps.seed.outputs.seed }}"
    named = next(s for s in steps if s.get("if") == "failure()")
    assert "CERES_MAIL_KILL_SEED=$SEED" in named["run"]


def test_the_test_job_restores_the_machine_cache_keyed_by_its_inputs():
    """Each entry of the machine cache (tests/machine_cache.py) is restored and saved under a key made from
    the files that make it; the test image, whose files must stay root's, is not among them."""
    steps = workflow("pull-request.yml")["jobs"]["test"]["steps"]
    caches = [s for s in steps if s.get("uses", "").startswith("actions/cache@")]
    paths = {line.strip() for s in caches for line in s["with"]["path"].splitlines() if line.strip()}
    assert paths == {f"~/.cache/ceres-mail/{entry}" for entry in
                     ("engine", "keycloak", "testnet/apt-cacher-ng", "wheels", "bin")}
    assert all("hashFiles(" in s["with"]["key"] for s in caches)
    run = next(s["run"] for s in steps if ".ci/run" in s.get("run", ""))
    assert 'CERES_MAIL_CACHE="$HOME/.cache/ceres-mail"' in run
