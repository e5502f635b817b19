"""The CrossGuard policy pack: `pulumi preview --policy-pack policy` (rules in policy/rules.py)."""

from pulumi_policy import PolicyPack

from policy.pack import PACK_NAME, policies

PolicyPack(name=PACK_NAME, policies=policies())
