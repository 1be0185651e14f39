{#- Redis from the distribution, as taskd's broker (`broker_url: redis://…`): a password, and
    the append-only file fsynced every second. Stream entries only wake workers (the database
    holds every task), so a second lost in a crash costs no task. -#}
{%- from "taskplane/map.jinja" import tp with context %}

redis-server:
  pkg.installed:
    - name: redis-server
  service.running:
    - enable: True
    - require:
      - pkg: redis-server
    - watch:
      - file: taskplane-redis-config

taskplane-redis-config:
  file.blockreplace:
    - name: /etc/redis/redis.conf
    - marker_start: '# BEGIN taskplane (managed by Salt)'
    - marker_end: '# END taskplane'
    - content: |
        bind {{ tp.redis.bind }}
        port {{ tp.redis.port }}
        requirepass {{ tp.redis.password }}
        appendonly yes
        appendfsync everysec
    - append_if_not_found: True
    - require:
      - pkg: redis-server
