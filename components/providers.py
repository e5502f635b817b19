"""Explicit provider resources, one per cloud, configured from the stack's settings.

Explicit providers (rather than ambient `proxmoxve:endpoint`-style config) keep every credential inside
this project's validated settings, encrypted as a Pulumi secret, and make each resource say which
account it lives in.
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


def create_providers(name: str, settings: Settings, parent: pulumi.Resource) -> Providers:
    opts = pulumi.ResourceOptions(parent=parent)
    return Providers(
        # Proxmox VE: API token for the API; SSH (agent) to the node for the snippet upload
        proxmox=proxmoxve.Provider(
            f"{name}-provider-proxmox",
            endpoint=settings.proxmox_endpoint,
            api_token=settings.proxmox_api_token,
            insecure=settings.proxmox_insecure,
            ssh=proxmoxve.ProviderSshArgs(agent=True, username=settings.proxmox_ssh_user),
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
