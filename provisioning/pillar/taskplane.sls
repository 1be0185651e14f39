# An example pillar: a single host running everything. Copy it, change the passwords, and
# point `source` at where the taskd and taskctl binaries are published.
taskplane:
  roles:
    - postgresql
    - rabbitmq
    - api
    - worker
  # A directory holding `taskd` and `taskctl`: salt://, https:// (give source_hash, e.g. the
  # URL of a SHA256SUMS file) or file:///path.
  source: file:///opt/taskplane/dist
  source_hash: ''
  config:
    database_url: postgres://taskplane:change-me@127.0.0.1:5432/taskplane
    broker_url: amqp://taskplane:change-me@127.0.0.1:5672/taskplane
    # With Redis as the broker instead (the `redis` role in place of `rabbitmq`):
    # broker_url: redis://:change-me@127.0.0.1:6379/0
    listen: 127.0.0.1:7070
    concurrency: 8
    queues: default
    enable_shell: False
  database:
    name: taskplane
    user: taskplane
    password: change-me
  rabbitmq:
    vhost: taskplane
    user: taskplane
    password: change-me
  redis:
    bind: 127.0.0.1
    port: 6379
    password: change-me
  kubernetes:
    minor: v1.34
