module shelfproof/loadgen

go 1.21
