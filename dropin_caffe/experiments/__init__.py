"""The experiment pipeline: datasets into LMDBs (`datasets`), configurations x seeds trained with
`caffe train` (`config`, `runner`), logs parsed (`logs`), plotted (`plots`) and summarised (`report`)."""
