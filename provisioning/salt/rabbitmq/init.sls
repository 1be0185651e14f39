{#- RabbitMQ from the distribution, with the vhost and user taskd uses. -#}
{%- from "taskplane/map.jinja" import tp with context %}

rabbitmq-server:
  pkg.installed:
    - name: rabbitmq-server
  service.running:
    - enable: True
    - require:
      - pkg: rabbitmq-server

taskplane-vhost:
  rabbitmq_vhost.present:
    - name: {{ tp.rabbitmq.vhost }}
    - require:
      - service: rabbitmq-server

taskplane-mq-user:
  rabbitmq_user.present:
    - name: {{ tp.rabbitmq.user }}
    - password: {{ tp.rabbitmq.password | json }}
    - force: False
    - perms:
      - {{ tp.rabbitmq.vhost | json }}:
        - '.*'
        - '.*'
        - '.*'
    - require:
      - rabbitmq_vhost: taskplane-vhost
