from localpanel.cli import cli

cli(prog_name="localpanel")
