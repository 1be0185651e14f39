{#- Installs and runs Taskplane: a system user, the taskd and taskctl binaries from the
    pillar's `source`, /etc/taskplane/taskd.env, and the systemd units taskd-api and
    taskd-worker (the same files as provisioning/systemd/). Applying it twice changes
    nothing. With `root` set, every path lands under it (a staging tree, as in tests). -#}
{%- from "taskplane/map.jinja" import tp with context %}
{%- set root = tp.root %}

{%- if tp.manage_user %}
taskplane-group:
  group.present:
    - name: {{ tp.group }}
    - system: True

taskplane-user:
  user.present:
    - name: {{ tp.user }}
    - gid: {{ tp.group }}
    - system: True
    - home: /var/lib/taskplane
    - createhome: False
    - shell: /usr/sbin/nologin
    - require:
      - group: taskplane-group
{%- endif %}

taskplane-state-dir:
  file.directory:
    - name: {{ root }}/var/lib/taskplane
    - user: {{ tp.user }}
    - group: {{ tp.group }}
    - mode: '0750'
    - makedirs: True

taskplane-config-dir:
  file.directory:
    - name: {{ root }}/etc/taskplane
    - user: root
    - group: {{ tp.group }}
    - mode: '0750'
    - makedirs: True

{%- if not tp.source %}
{{ raise('set the taskplane:source pillar to where taskd and taskctl are published: salt://…, https://… (with source_hash) or file:///…') }}
{%- else %}
{%- for binary in ['taskd', 'taskctl'] %}
{#- source_hash: the URL of a sums file (one for both), or a mapping binary -> hash. #}
{%- set hash = tp.source_hash[binary] if tp.source_hash is mapping else tp.source_hash %}
taskplane-{{ binary }}:
  file.managed:
    - name: {{ root }}/usr/local/bin/{{ binary }}
    - source: {{ tp.source }}/{{ binary }}
{%- if hash %}
    - source_hash: {{ hash }}
{%- else %}
    - skip_verify: True
{%- endif %}
    - user: root
    - group: root
    - mode: '0755'
    - makedirs: True
{%- endfor %}
{%- endif %}

taskplane-env:
  file.managed:
    - name: {{ root }}/etc/taskplane/taskd.env
    - source: salt://taskplane/files/taskd.env.jinja
    - template: jinja
    - context:
        config: {{ tp.config | json }}
    - show_changes: False
    - user: root
    - group: {{ tp.group }}
    - mode: '0640'
    - require:
      - file: taskplane-config-dir

{%- for role in ['api', 'worker'] %}
taskplane-unit-{{ role }}:
  file.managed:
    - name: {{ root }}/etc/systemd/system/taskd-{{ role }}.service
    - source: salt://taskplane/files/systemd/taskd-{{ role }}.service
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: True
{%- endfor %}

{%- if tp.manage_services %}
{%- for role in ['api', 'worker'] %}
{%- if role in tp.roles %}
taskd-{{ role }}:
  service.running:
    - enable: True
    - watch:
{%- if tp.source %}
      - file: taskplane-taskd
{%- endif %}
      - file: taskplane-env
      - file: taskplane-unit-{{ role }}
{%- else %}
taskd-{{ role }}:
  service.dead:
    - enable: False
{%- endif %}
{%- endfor %}
{%- endif %}
