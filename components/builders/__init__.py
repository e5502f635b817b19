"""Pure builders: text in, text out, no Pulumi import.

They compute what to declare apart from declaring it, in a stable order and without timestamps, so the
same stack always renders the same inputs (a no-change `pulumi up` shows no diff) and the components,
`mailctl` and the tests share one truth. The programs a stage ships to the VM and runs there are not
builders: they live in components/vm_programs.
"""
