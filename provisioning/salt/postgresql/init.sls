{#- PostgreSQL from the distribution, with the database and role taskd uses. -#}
{%- from "taskplane/map.jinja" import tp with context %}

postgresql:
  pkg.installed:
    - name: postgresql
  service.running:
    - enable: True
    - require:
      - pkg: postgresql

taskplane-db-role:
  postgres_user.present:
    - name: {{ tp.database.user }}
    - password: {{ tp.database.password | json }}
    - login: True
    - require:
      - service: postgresql

taskplane-db:
  postgres_database.present:
    - name: {{ tp.database.name }}
    - owner: {{ tp.database.user }}
    - require:
      - postgres_user: taskplane-db-role
