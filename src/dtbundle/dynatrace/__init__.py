"""Dynatrace mode: which images an observability option needs, at which immutable versions,
where they come from, and a DynaKube fragment pointing at the private registry.

One module per concept; import from them directly (this package module imports nothing):

* :mod:`~dtbundle.dynatrace.table`: the component/option table (``dynatrace.toml``, data) and its model;
* :mod:`~dtbundle.dynatrace.selection`: options + versions + environment -> image requests,
  built-in registry credentials and the keyless-verification default (:func:`dynatrace_export`);
* :mod:`~dtbundle.dynatrace.deployment_api`: OneAgent versions from the Deployment API;
* :mod:`~dtbundle.dynatrace.dynakube`: the DynaKube (and EdgeConnect) for the imported images,
  shaped by :mod:`~dtbundle.dynatrace.operator_api` (what each Operator version serves) and
  written by :mod:`~dtbundle.dynatrace.yamltext`.

Nothing here logs or returns a token.
"""
