# Which states each host gets. Roles come from the `taskplane:roles` pillar list, so one
# pillar file describes a host: e.g. roles [postgresql, rabbitmq, api, worker] for a
# single-box install ([postgresql, redis, api, worker] with Redis as the broker, and
# config:broker_url redis://:PASSWORD@127.0.0.1:6379/0), [kubernetes, docker] for a cluster
# node.
base:
  'taskplane:roles:postgresql':
    - match: pillar
    - postgresql
  'taskplane:roles:rabbitmq':
    - match: pillar
    - rabbitmq
  'taskplane:roles:redis':
    - match: pillar
    - redis
  'taskplane:roles:docker':
    - match: pillar
    - docker
  'taskplane:roles:kubernetes':
    - match: pillar
    - kubernetes
  'taskplane:roles:api':
    - match: pillar
    - taskplane
  'taskplane:roles:worker':
    - match: pillar
    - taskplane
