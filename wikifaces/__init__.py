"""wikifaces: a faces (and LSUN) dataset builder and DCGAN trainer.

The layers, each importing only from below (checked by `lint-imports`, see pyproject.toml):

    adapters   wikifaces.cli, over flows (Prefect)
    fixtures   wikifaces.fixtures: the offline stand-in, sample photographs, LSUN sample writer
    pipeline   wikifaces.pipeline: the stage registry, receipts, the one runner
    report     wikifaces.report: reads every stage's outputs
    stages     scraping, faces, dedup, training, wikifaces.publish
    shards     the dataset format (imports nothing else of ours)
    ground     wikifaces.core: version, paths, atomic files, journals, lock, imaging, identity

This module itself imports nothing: `import shards` or a stage never pays for the rest.
"""
