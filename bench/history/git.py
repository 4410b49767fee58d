"""What the history needs from git: a commit's time, subject and place in first-parent order, and the
first-parent commits between two revisions. Each call names the revision in its one-line error."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.results.rundir import RunError


def git(repo: Path, *args: str) -> str:
    """git's output, stripped; RunError with git's last line when it fails."""
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RunError(f"git {' '.join(args)}: {err}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise RunError(f"git {' '.join(args)} in {repo}: {last}")
    return done.stdout.strip()


@dataclass(frozen=True)
class Commit:
    """A commit as the history keeps it: `order` counts the commits on its first-parent line from the root, so
    commits of one branch sort in the order they landed, wherever the runs were made."""

    sha: str
    time: str  # committer time, ISO 8601
    subject: str
    order: int


def commit(repo: Path, rev: str) -> Commit:
    """The commit `rev` names; refused in a shallow clone, where first-parent order would be wrong."""
    if git(repo, "rev-parse", "--is-shallow-repository") == "true":
        raise RunError(f"{repo} is a shallow clone: first-parent order needs the whole history (git fetch "
                       "--unshallow; in GitHub Actions, actions/checkout with fetch-depth: 0)")
    try:
        sha, time, subject = git(repo, "show", "-s", "--format=%H%n%cI%n%s", f"{rev}^{{commit}}").split("\n", 2)
    except RunError:
        raise RunError(f"{rev}: not a commit of the repository at {repo} (fetch it, or pass --repo)") from None
    return Commit(sha, time, subject, int(git(repo, "rev-list", "--first-parent", "--count", sha)))


def branch_holding(repo: Path, sha: str) -> str:
    """The checked-out branch when `sha` is on it, else '' (detached, or a commit of another branch)."""
    name = git(repo, "rev-parse", "--abbrev-ref", "HEAD")
    on_it = subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", sha, "HEAD"]).returncode == 0
    return name if name != "HEAD" and on_it else ""


def first_parent_between(repo: Path, good: str, bad: str) -> list[str]:
    """The commits after `good` up to `bad` on bad's first-parent line, oldest first; `good` must be on it."""
    good_sha, bad_sha = commit(repo, good).sha, commit(repo, bad).sha
    line = git(repo, "rev-list", "--first-parent", bad_sha).split()
    if good_sha not in line or good_sha == bad_sha:
        raise RunError(f"{good} is not on the first-parent line before {bad}: bisect needs GOOD to be an earlier "
                       "commit of BAD's history")
    return line[:line.index(good_sha)][::-1]
