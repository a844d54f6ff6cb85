"""The prototxt toolkit behind expand_net: read and write (`prototxt`, `upgrade`), know layer types
(`vocabulary`), infer shapes (`shapes`), rewrite (`rewrite`, `plan`), summarise (`summary`), emit
solvers and stock nets (`solver`, `templates`), prove in Caffe (`validate`), draw (`draw`), build
with Caffe's NetSpec (`netspec`), and the whole pipeline as one function (`expand.expand_net`)."""
