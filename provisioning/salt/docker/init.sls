{#- Docker Engine from the distribution (docker.io), for hosts that run the Compose stack. -#}

docker:
  pkg.installed:
    - pkgs:
      - docker.io
      - docker-compose
  service.running:
    - enable: True
    - require:
      - pkg: docker
