{#- A Kubernetes node's packages: kubeadm, kubelet and kubectl from pkgs.k8s.io, held at
    the pillar's minor version, with the kernel settings kubeadm checks for. Cluster
    bootstrap (kubeadm init/join) is left to the operator. -#}
{%- from "taskplane/map.jinja" import tp with context %}
{%- set minor = tp.kubernetes.minor %}

kubernetes-keyring-dir:
  file.directory:
    - name: /etc/apt/keyrings
    - mode: '0755'

kubernetes-repo:
  pkgrepo.managed:
    - name: deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/{{ minor }}/deb/ /
    - file: /etc/apt/sources.list.d/kubernetes.list
    - key_url: https://pkgs.k8s.io/core:/stable:/{{ minor }}/deb/Release.key
    - aptkey: False
    - signedby: /etc/apt/keyrings/kubernetes-apt-keyring.gpg
    - require:
      - file: kubernetes-keyring-dir

kubernetes-packages:
  pkg.installed:
    - pkgs:
      - kubeadm
      - kubelet
      - kubectl
    - hold: True
    - require:
      - pkgrepo: kubernetes-repo

{%- for module in ['overlay', 'br_netfilter'] %}
kernel-module-{{ module }}:
  kmod.present:
    - name: {{ module }}
    - persist: True
{%- endfor %}

{%- for key in ['net.ipv4.ip_forward', 'net.bridge.bridge-nf-call-iptables', 'net.bridge.bridge-nf-call-ip6tables'] %}
sysctl-{{ key }}:
  sysctl.present:
    - name: {{ key }}
    - value: 1
    - config: /etc/sysctl.d/99-kubernetes.conf
    - require:
      - kmod: kernel-module-br_netfilter
{%- endfor %}

# The kubelet refuses to start with swap on: off now, and off after a reboot.
swap-off:
  cmd.run:
    - name: swapoff -a
    - onlyif: test -n "$(swapon --noheadings --show)"

swap-off-at-boot:
  file.replace:
    - name: /etc/fstab
    - pattern: '^([^#\s]\S*\s+\S+\s+swap\s.*)$'
    - repl: '# \1'
    - ignore_if_missing: True

kubelet:
  service.enabled:
    - require:
      - pkg: kubernetes-packages
