"""Explicit provider resources, one per cloud, configured from the stack's settings.

Explicit providers (rather than ambient `proxmoxve:endpoint`-style config) keep every credential inside
this project's validated settings, encrypted as a Pulumi secret, and make each resource say which
account it lives in.

The providers sit at the top of the stack, not under the Platform component. The engine steps every
provider in every operation, `--target` or not; a provider under a component that the operation does not
create (a first targeted preview or up) would refer to a parent missing from the state, and the engine
refuses that. An alias keeps the URN the providers had under the Platform, so a stack deployed before
this move keeps its providers (a provider whose URN changes is replaced, and with it everything it
manages).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_cloudflare as cloudflare
import pulumi_keycloak as keycloak
import pulumi_kubernetes as kubernetes
import pulumi_proxmoxve as proxmoxve

from components.settings import Settings


@dataclass(frozen=True)
class Providers:
    """The four providers every part of the graph is created with."""

    proxmox: proxmoxve.Provider
    cloudflare: cloudflare.Provider
    kubernetes: kubernetes.Provider
    keycloak: keycloak.Provider


def provider_options(former_parent: pulumi.Resource) -> pulumi.ResourceOptions:
    """Top of the stack, known by the URN the providers had under `former_parent` too."""
    return pulumi.ResourceOptions(aliases=[pulumi.Alias(parent=former_parent)])


def create_providers(name: str, settings: Settings, former_parent: pulumi.Resource) -> Providers:
    opts = provider_options(former_parent)
    return Providers(
        # Proxmox VE: API token for the API; SSH (agent) to the node for the snippet upload
        proxmox=proxmoxve.Provider(
            f"{name}-provider-proxmox",
            endpoint=settings.proxmox_endpoint,
            api_token=settings.proxmox_api_token,
            insecure=settings.proxmox_insecure,
            ssh=proxmoxve.ProviderSshArgs(
                agent=True,
                username=settings.proxmox_ssh_user,
                # the address dialled is the one whose host key the deploy pins, not whatever the API lists
                nodes=[proxmoxve.ProviderSshNodeArgs(name=settings.proxmox_node, address=settings.proxmox_ssh_address)]
                if settings.proxmox_ssh_address
                else None,
            ),
            opts=opts,
        ),
        # Cloudflare: a token scoped to DNS edit on the zone
        cloudflare=cloudflare.Provider(f"{name}-provider-cloudflare", api_token=settings.cloudflare_api_token, opts=opts),
        # Kubernetes: the CERES k3s cluster
        kubernetes=kubernetes.Provider(
            f"{name}-provider-kubernetes",
            kubeconfig=settings.kubeconfig,
            context=settings.kube_context or None,
            namespace=settings.ceres_namespace,
            opts=opts,
        ),
        # Keycloak: a confidential admin client (client-credentials grant)
        keycloak=keycloak.Provider(
            f"{name}-provider-keycloak",
            url=settings.keycloak_url,
            realm=settings.keycloak_admin_realm,
            client_id=settings.keycloak_client_id,
            client_secret=settings.keycloak_client_secret,
            opts=opts,
        ),
    )
