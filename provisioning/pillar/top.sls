base:
  '*':
    - taskplane
