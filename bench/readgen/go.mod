module mysimbdp/bench/readgen

go 1.21
