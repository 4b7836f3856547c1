from choreo_ingest.cli import main

main()
