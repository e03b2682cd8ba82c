module widetypes

go 1.21
