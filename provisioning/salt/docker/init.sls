{#- Docker Engine with the Compose v2 plugin (`docker compose`), from Docker's apt
    repository: Debian's docker.io ships only Compose v1. -#}
{%- set distro = grains['os'] | lower %}
{%- set codename = grains['oscodename'] %}

docker-keyring-dir:
  file.directory:
    - name: /etc/apt/keyrings
    - mode: '0755'

docker-repo:
  pkgrepo.managed:
    - name: deb [signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/{{ distro }} {{ codename }} stable
    - file: /etc/apt/sources.list.d/docker.list
    - key_url: https://download.docker.com/linux/{{ distro }}/gpg
    - aptkey: False
    - signedby: /etc/apt/keyrings/docker.asc
    - require:
      - file: docker-keyring-dir

docker:
  pkg.installed:
    - pkgs:
      - docker-ce
      - docker-ce-cli
      - containerd.io
      - docker-buildx-plugin
      - docker-compose-plugin
    - require:
      - pkgrepo: docker-repo
  service.running:
    - enable: True
    - require:
      - pkg: docker
